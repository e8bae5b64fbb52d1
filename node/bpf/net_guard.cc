#include "node/bpf/net_guard.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"
#include "node/bpf/net.h"
#include "node/bpf/net.skel.h"

namespace fnmesh::node {
namespace {

static_assert(int(proto::NetworkPolicy::none) == net_none && int(proto::NetworkPolicy::loopback) == net_loopback &&
              int(proto::NetworkPolicy::host) == net_host && int(proto::NetworkPolicy::allow_list) == net_allow_list);

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

  route_libbpf_log();
  std::unique_ptr<net_guard> g(new net_guard);
  g->skel_.reset(net_bpf__open());
  if (!g->skel_) return fail_bpf("open net.bpf.o", errno);
  auto& s = *g->skel_;
  if (bpf_map__set_max_entries(s.maps.slot_of, o.max_cgroups) != 0 ||
      bpf_map__set_max_entries(s.maps.slots, o.max_cgroups) != 0 ||
      bpf_map__set_max_entries(s.maps.allowed, o.max_allow_entries) != 0)
    return fail_bpf("size maps", errno);
  if (int r = net_bpf__load(&s); r != 0) return fail_bpf("load net.bpf.o", -r);
  g->allowed_fd_ = bpf_map__fd(s.maps.allowed);
  auto slots = slot_table::map(bpf_map__fd(s.maps.slot_of), bpf_map__fd(s.maps.slots), o.max_cgroups, sizeof(net_slot));
  if (!slots) return std::unexpected(slots.error());
  g->slots_ = std::move(*slots);
  // Links attach in multi mode: other programs on the directory stay, and ours go with us.
  for (auto [prog, link] : {std::pair{s.progs.count_in, &s.links.count_in}, {s.progs.count_out, &s.links.count_out},
                            {s.progs.connect4, &s.links.connect4}, {s.progs.connect6, &s.links.connect6},
                            {s.progs.sendmsg4, &s.links.sendmsg4}, {s.progs.sendmsg6, &s.links.sendmsg6},
                            {s.progs.bind4, &s.links.bind4}, {s.progs.bind6, &s.links.bind6}}) {
    *link = bpf_program__attach_cgroup(prog, dir.get());
    if (!*link) return fail_bpf("attach net.bpf.o", errno);
  }
  return g;
}

net_guard::~net_guard() = default;

void net_guard::forget(uint64_t cgroup_id, const std::vector<allow_entry>& allow) {
  for (const auto& e : allow) {
    const auto k = key_of(cgroup_id, e);
    (void)bpf_map_delete_elem(allowed_fd_, &k);
  }
}

result<void> net_guard::watch(uint64_t cgroup_id, proto::NetworkPolicy policy, std::span<const allow_entry> allow) {
  std::lock_guard lock(mutex_);
  if (allowed_.contains(cgroup_id)) return fail_errno(EEXIST);
  std::vector<allow_entry> entries(allow.begin(), allow.end());
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto k = key_of(cgroup_id, entries[i]);
    const uint8_t yes = 1;
    if (int r = bpf_map_update_elem(allowed_fd_, &k, &yes, BPF_ANY); r != 0) {
      entries.resize(i);
      forget(cgroup_id, entries);
      return fail_errno(-r == ENOSPC ? E2BIG : -r);
    }
  }
  if (auto ok = slots_.take(cgroup_id, net_slot{.policy = uint32_t(policy)}); !ok) {
    forget(cgroup_id, entries);
    return ok;
  }
  allowed_.emplace(cgroup_id, std::move(entries));
  return {};
}

result<void> net_guard::unwatch(uint64_t cgroup_id) {
  std::lock_guard lock(mutex_);
  if (auto ok = slots_.release(cgroup_id); !ok) return ok;
  auto it = allowed_.find(cgroup_id);
  forget(cgroup_id, it->second);
  allowed_.erase(it);
  return {};
}

result<net_traffic> net_guard::traffic(uint64_t cgroup_id) const {
  std::lock_guard lock(mutex_);
  auto* s = slots_.find<net_slot>(cgroup_id);
  if (!s) return fail_errno(ENOENT);
  auto load = [](__u64& v) { return int64_t(std::atomic_ref(v).load(std::memory_order_relaxed)); };
  return net_traffic{.rx_bytes = load(s->rx_bytes), .tx_bytes = load(s->tx_bytes), .refused = load(s->refused)};
}

}  // namespace fnmesh::node
