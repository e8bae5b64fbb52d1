#include "node/bpf/net_guard.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/types.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "common/log.h"
#include "common/unique_fd.h"
#include "node/bpf/cpu_meter.h"
#include "node/bpf/net.h"
#include "node/bpf/net.skel.h"

namespace fnmesh::node {
namespace {

static_assert(int(proto::NetworkPolicy::none) == net_none && int(proto::NetworkPolicy::loopback) == net_loopback &&
              int(proto::NetworkPolicy::host) == net_host && int(proto::NetworkPolicy::allow_list) == net_allow_list);

// libbpf's messages, verifier logs included, go to the "bpf" log at debug level.
int print_libbpf(libbpf_print_level, const char* format, va_list args) noexcept {
  char text[1024];
  std::vsnprintf(text, sizeof text, format, args);
  std::string_view t(text);
  while (!t.empty() && t.back() == '\n') t.remove_suffix(1);
  logger("bpf")->debug("libbpf: {}", t);
  return 0;
}

std::unexpected<std::error_code> fail_bpf(const char* what, int e) {
  logger("bpf")->debug("{}: {}", what, std::strerror(e));
  return fail(e == EPERM || e == EACCES ? bpf_errc::not_permitted : bpf_errc::refused);
}

net_allow_key key_of(uint64_t cgroup_id, const allow_entry& e) {
  net_allow_key k{};
  k.prefixlen = 96 + e.prefix;
  k.port = e.port;
  k.cgroup_id = cgroup_id;
  std::memcpy(k.address, e.address.data(), sizeof k.address);
  return k;
}

}  // namespace

void net_guard::skeleton_deleter::operator()(net_bpf* s) const noexcept { net_bpf__destroy(s); }

result<std::unique_ptr<net_guard>> net_guard::open(const options& o) {
  if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) return fail(bpf_errc::no_btf);
  if (o.max_cgroups == 0 || o.max_allow_entries == 0) return fail_errno(EINVAL);
  unique_fd dir(::open(o.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return fail_errno(errno);
  if (auto id = cgroup_id(dir.get()); !id) return std::unexpected(id.error());

  static std::once_flag print_set;
  std::call_once(print_set, [] { libbpf_set_print(print_libbpf); });
  std::unique_ptr<net_guard> g(new net_guard);
  g->skel_.reset(net_bpf__open());
  if (!g->skel_) return fail_bpf("open net.bpf.o", errno);
  auto& s = *g->skel_;
  if (bpf_map__set_max_entries(s.maps.slot_of, o.max_cgroups) != 0 ||
      bpf_map__set_max_entries(s.maps.slots, o.max_cgroups) != 0 ||
      bpf_map__set_max_entries(s.maps.allowed, o.max_allow_entries) != 0)
    return fail_bpf("size maps", errno);
  if (int r = net_bpf__load(&s); r != 0) return fail_bpf("load net.bpf.o", -r);
  g->slot_of_fd_ = bpf_map__fd(s.maps.slot_of);
  g->allowed_fd_ = bpf_map__fd(s.maps.allowed);
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  g->slots_bytes_ = (o.max_cgroups * sizeof(net_slot) + page - 1) / page * page;
  void* mapped = ::mmap(nullptr, g->slots_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(s.maps.slots), 0);
  if (mapped == MAP_FAILED) return fail_bpf("map the slots", errno);
  g->slots_ = static_cast<net_slot*>(mapped);
  for (uint32_t i = 0; i < o.max_cgroups; ++i) g->free_.push_back(i);
  // Links attach in multi mode: other programs on the directory stay, and ours go with us.
  for (auto [prog, link] : {std::pair{s.progs.count_in, &s.links.count_in}, {s.progs.count_out, &s.links.count_out},
                            {s.progs.connect4, &s.links.connect4}, {s.progs.connect6, &s.links.connect6},
                            {s.progs.sendmsg4, &s.links.sendmsg4}, {s.progs.sendmsg6, &s.links.sendmsg6}}) {
    *link = bpf_program__attach_cgroup(prog, dir.get());
    if (!*link) return fail_bpf("attach net.bpf.o", errno);
  }
  return g;
}

net_guard::~net_guard() {
  if (slots_) ::munmap(slots_, slots_bytes_);
}

void net_guard::forget(uint64_t cgroup_id, const std::vector<allow_entry>& allow) {
  for (const auto& e : allow) {
    const auto k = key_of(cgroup_id, e);
    (void)bpf_map_delete_elem(allowed_fd_, &k);
  }
}

result<void> net_guard::watch(uint64_t cgroup_id, proto::NetworkPolicy policy, std::span<const allow_entry> allow) {
  std::lock_guard lock(mutex_);
  if (watched_.contains(cgroup_id)) return fail_errno(EEXIST);
  if (free_.empty()) return fail_errno(E2BIG);
  watched w{.slot = free_.front(), .allow = {allow.begin(), allow.end()}};
  for (size_t i = 0; i < w.allow.size(); ++i) {
    const auto k = key_of(cgroup_id, w.allow[i]);
    const uint8_t yes = 1;
    if (int r = bpf_map_update_elem(allowed_fd_, &k, &yes, BPF_ANY); r != 0) {
      w.allow.resize(i);
      forget(cgroup_id, w.allow);
      return fail_errno(-r == ENOSPC ? E2BIG : -r);
    }
  }
  slots_[w.slot] = net_slot{.policy = uint32_t(policy)};
  if (int r = bpf_map_update_elem(slot_of_fd_, &cgroup_id, &w.slot, BPF_NOEXIST); r != 0) {
    forget(cgroup_id, w.allow);
    return fail_errno(-r);
  }
  free_.pop_front();
  watched_.emplace(cgroup_id, std::move(w));
  return {};
}

// A packet of the old cgroup still being counted as its slot is freed would add to whoever
// gets it next: the slot goes to the back of the queue, thousands of watches away.
result<void> net_guard::unwatch(uint64_t cgroup_id) {
  std::lock_guard lock(mutex_);
  auto it = watched_.find(cgroup_id);
  if (it == watched_.end()) return fail_errno(ENOENT);
  if (int r = bpf_map_delete_elem(slot_of_fd_, &cgroup_id); r != 0) return fail_errno(-r);
  forget(cgroup_id, it->second.allow);
  free_.push_back(it->second.slot);
  watched_.erase(it);
  return {};
}

result<net_traffic> net_guard::traffic(uint64_t cgroup_id) const {
  std::lock_guard lock(mutex_);
  auto it = watched_.find(cgroup_id);
  if (it == watched_.end()) return fail_errno(ENOENT);
  net_slot& s = slots_[it->second.slot];
  auto load = [](__u64& v) { return int64_t(std::atomic_ref(v).load(std::memory_order_relaxed)); };
  return net_traffic{.rx_bytes = load(s.rx_bytes), .tx_bytes = load(s.tx_bytes), .refused = load(s.refused)};
}

}  // namespace fnmesh::node
