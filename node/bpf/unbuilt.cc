// node/bpf where it is not built (FNMESH_BPF=OFF): every open() fails with
// bpf_errc::not_built, so no meter or guard exists and no other member is ever reached;
// they are here so that their users build the same either way.
#include "node/bpf/cpu_meter.h"
#include "node/bpf/net_guard.h"

namespace fnmesh::node {

slot_table::~slot_table() = default;

void cpu_meter::skeleton_deleter::operator()(cpu_bpf*) const noexcept {}
void cpu_meter::ring_deleter::operator()(ring_buffer*) const noexcept {}
result<std::unique_ptr<cpu_meter>> cpu_meter::open(const options&) { return fail(bpf_errc::not_built); }
cpu_meter::~cpu_meter() = default;
result<void> cpu_meter::watch(uint64_t) { return fail(bpf_errc::not_built); }
result<void> cpu_meter::unwatch(uint64_t) { return fail(bpf_errc::not_built); }
result<int64_t> cpu_meter::cpu_ns(uint64_t) const { return fail(bpf_errc::not_built); }
result<void> cpu_meter::arm(uint64_t, int64_t, std::optional<int64_t>) { return fail(bpf_errc::not_built); }
result<void> cpu_meter::disarm(uint64_t) { return fail(bpf_errc::not_built); }
int cpu_meter::events_fd() const noexcept { return -1; }
size_t cpu_meter::drain(const std::function<void(const cpu_kill&)>&) { return 0; }
result<unique_fd> cpu_meter::enable_stats() { return fail(bpf_errc::not_built); }
std::vector<bpf_prog_stats> cpu_meter::prog_stats() const { return {}; }

void net_guard::skeleton_deleter::operator()(net_bpf*) const noexcept {}
result<std::unique_ptr<net_guard>> net_guard::open(const options&) { return fail(bpf_errc::not_built); }
net_guard::~net_guard() = default;
result<void> net_guard::watch(uint64_t, proto::NetworkPolicy, std::span<const allow_entry>) {
  return fail(bpf_errc::not_built);
}
result<void> net_guard::unwatch(uint64_t) { return fail(bpf_errc::not_built); }
result<net_traffic> net_guard::traffic(uint64_t) const { return fail(bpf_errc::not_built); }

}  // namespace fnmesh::node
