#include "node/bpf/net_guard.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/types.h>
#include <unistd.h>

#include <algorithm>
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
  if (bpf_map__set_max_entries(s.maps.usage, o.max_cgroups) != 0 ||
      bpf_map__set_max_entries(s.maps.allowed, o.max_allow_entries) != 0)
    return fail_bpf("size maps", errno);
  if (int r = net_bpf__load(&s); r != 0) return fail_bpf("load net.bpf.o", -r);
  // Links attach in multi mode: other programs on the directory stay, and ours go with us.
  for (auto [prog, link] : {std::pair{s.progs.count_in, &s.links.count_in}, {s.progs.count_out, &s.links.count_out},
                            {s.progs.connect4, &s.links.connect4}, {s.progs.connect6, &s.links.connect6},
                            {s.progs.sendmsg4, &s.links.sendmsg4}, {s.progs.sendmsg6, &s.links.sendmsg6}}) {
    *link = bpf_program__attach_cgroup(prog, dir.get());
    if (!*link) return fail_bpf("attach net.bpf.o", errno);
  }
  g->usage_fd_ = bpf_map__fd(s.maps.usage);
  g->allowed_fd_ = bpf_map__fd(s.maps.allowed);
  return g;
}

net_guard::~net_guard() = default;

result<void> net_guard::watch(uint64_t cgroup_id, proto::NetworkPolicy policy, std::span<const allow_entry> allow) {
  std::lock_guard lock(mutex_);
  if (allowed_.contains(cgroup_id)) return fail_errno(EEXIST);
  std::vector<allow_entry> entries(allow.begin(), allow.end());
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto k = key_of(cgroup_id, entries[i]);
    const uint8_t yes = 1;
    if (int r = bpf_map_update_elem(allowed_fd_, &k, &yes, BPF_ANY); r != 0) {
      entries.resize(i);
      for (const auto& e : entries) {
        const auto added = key_of(cgroup_id, e);
        (void)bpf_map_delete_elem(allowed_fd_, &added);
      }
      return fail_errno(-r == ENOSPC ? E2BIG : -r);
    }
  }
  net_usage u{};
  u.policy = uint32_t(policy);
  if (int r = bpf_map_update_elem(usage_fd_, &cgroup_id, &u, BPF_NOEXIST); r != 0) {
    for (const auto& e : entries) {
      const auto k = key_of(cgroup_id, e);
      (void)bpf_map_delete_elem(allowed_fd_, &k);
    }
    return fail_errno(-r);
  }
  allowed_.emplace(cgroup_id, std::move(entries));
  return {};
}

result<void> net_guard::unwatch(uint64_t cgroup_id) {
  std::lock_guard lock(mutex_);
  auto it = allowed_.find(cgroup_id);
  if (it == allowed_.end()) return fail_errno(ENOENT);
  for (const auto& e : it->second) {
    const auto k = key_of(cgroup_id, e);
    (void)bpf_map_delete_elem(allowed_fd_, &k);
  }
  allowed_.erase(it);
  if (int r = bpf_map_delete_elem(usage_fd_, &cgroup_id); r != 0) return fail_errno(-r);
  return {};
}

result<net_traffic> net_guard::traffic(uint64_t cgroup_id) const {
  net_usage u{};
  if (int r = bpf_map_lookup_elem(usage_fd_, &cgroup_id, &u); r != 0) return fail_errno(-r);
  return net_traffic{.rx_bytes = int64_t(u.rx_bytes), .tx_bytes = int64_t(u.tx_bytes), .refused = int64_t(u.refused)};
}

}  // namespace fnmesh::node
