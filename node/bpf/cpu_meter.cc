#include "node/bpf/cpu_meter.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "node/bpf/cpu.h"
#include "node/bpf/cpu.skel.h"

namespace fnmesh::node {

void cpu_meter::skeleton_deleter::operator()(cpu_bpf* s) const noexcept { cpu_bpf__destroy(s); }
void cpu_meter::ring_deleter::operator()(ring_buffer* r) const noexcept { ring_buffer__free(r); }

result<std::unique_ptr<cpu_meter>> cpu_meter::open(const options& o) {
  route_libbpf_log();
  if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) return fail(bpf_errc::no_btf);
  if (o.max_cgroups == 0) return fail_errno(EINVAL);

  std::unique_ptr<cpu_meter> m(new cpu_meter);
  m->skel_.reset(cpu_bpf__open());
  if (!m->skel_) return fail_bpf("open cpu.bpf.o", errno);
  auto& s = *m->skel_;
  s.rodata->debug = o.debug;
  if (bpf_map__set_max_entries(s.maps.slot_of, o.max_cgroups) != 0 ||
      bpf_map__set_max_entries(s.maps.slots, o.max_cgroups) != 0)
    return fail_bpf("size maps", errno);
  if (int r = cpu_bpf__load(&s); r != 0) return fail_bpf("load cpu.bpf.o", -r);

  auto slots = slot_table::map(bpf_map__fd(s.maps.slot_of), bpf_map__fd(s.maps.slots), o.max_cgroups, sizeof(cpu_slot));
  if (!slots) return std::unexpected(slots.error());
  m->slots_ = std::move(*slots);
  if (int r = cpu_bpf__attach(&s); r != 0) return fail_bpf("attach cpu.bpf.o", -r);

  auto on_event = [](void* ctx, void* data, size_t) noexcept {
    auto* self = static_cast<cpu_meter*>(ctx);
    const auto* e = static_cast<const cpu_kill_event*>(data);
    (*self->on_kill_)({.cgroup_id = e->cgroup_id, .used_ns = static_cast<int64_t>(e->used_ns)});
    return 0;
  };
  m->events_.reset(ring_buffer__new(bpf_map__fd(s.maps.kills), on_event, m.get(), nullptr));
  if (!m->events_) return fail_bpf("ring buffer", errno);
  return m;
}

cpu_meter::~cpu_meter() = default;

result<void> cpu_meter::watch(uint64_t cgroup_id) {
  std::lock_guard lock(mutex_);
  return slots_.take(cgroup_id, cpu_slot{});
}

result<void> cpu_meter::unwatch(uint64_t cgroup_id) {
  std::lock_guard lock(mutex_);
  if (auto* s = slots_.find<cpu_slot>(cgroup_id)) std::atomic_ref(s->kill_at).store(0, std::memory_order_release);
  return slots_.release(cgroup_id);
}

result<int64_t> cpu_meter::cpu_ns(uint64_t cgroup_id) const {
  std::lock_guard lock(mutex_);
  auto* s = slots_.find<cpu_slot>(cgroup_id);
  if (!s) return fail_errno(ENOENT);
  return static_cast<int64_t>(std::atomic_ref(s->ns).load(std::memory_order_relaxed));
}

result<void> cpu_meter::arm(uint64_t cgroup_id, int64_t budget_ns, std::optional<int64_t> counted_ns) {
  if (budget_ns <= 0) return fail_errno(EINVAL);
  std::lock_guard lock(mutex_);
  auto* s = slots_.find<cpu_slot>(cgroup_id);
  if (!s) return fail_errno(ENOENT);
  const __u64 now = counted_ns ? static_cast<__u64>(*counted_ns) : std::atomic_ref(s->ns).load(std::memory_order_relaxed);
  std::atomic_ref(s->kill_at).store(0, std::memory_order_relaxed);
  std::atomic_ref(s->armed_at).store(now, std::memory_order_relaxed);
  std::atomic_ref(s->gen).store(++arming_, std::memory_order_relaxed);
  std::atomic_ref(s->kill_at).store(now + static_cast<__u64>(budget_ns), std::memory_order_release);
  return {};
}

result<void> cpu_meter::disarm(uint64_t cgroup_id) {
  std::lock_guard lock(mutex_);
  if (auto* s = slots_.find<cpu_slot>(cgroup_id)) std::atomic_ref(s->kill_at).store(0, std::memory_order_release);
  return {};
}

int cpu_meter::events_fd() const noexcept { return ring_buffer__epoll_fd(events_.get()); }

size_t cpu_meter::drain(const std::function<void(const cpu_kill&)>& on_kill) {
  on_kill_ = &on_kill;
  int n = ring_buffer__consume(events_.get());
  on_kill_ = nullptr;
  return n > 0 ? static_cast<size_t>(n) : 0;
}

result<unique_fd> cpu_meter::enable_stats() {
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) return fail_errno(-fd);
  return unique_fd(fd);
}

std::vector<bpf_prog_stats> cpu_meter::prog_stats() const {
  std::vector<bpf_prog_stats> out;
  bpf_program* p = nullptr;
  bpf_object__for_each_program(p, skel_->obj) {
    bpf_prog_info info{};
    __u32 len = sizeof info;
    if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len) != 0) continue;
    out.push_back({.name = bpf_program__name(p), .run_ns = info.run_time_ns, .runs = info.run_cnt});
  }
  return out;
}

}  // namespace fnmesh::node
