#include "node/bpf/cpu_meter.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <linux/types.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "common/log.h"
#include "node/bpf/cpu.h"
#include "node/bpf/cpu.skel.h"

namespace fnmesh::node {
namespace {

constexpr const char* vmlinux_btf = "/sys/kernel/btf/vmlinux";

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "bpf"; }
  std::string message(int v) const override {
    switch (static_cast<bpf_errc>(v)) {
      case bpf_errc::no_btf: return "BPF unavailable: the kernel has no BTF (/sys/kernel/btf/vmlinux)";
      case bpf_errc::not_permitted: return "BPF unavailable: needs CAP_BPF and CAP_PERFMON (or root)";
      case bpf_errc::refused:
        return "BPF unavailable: the kernel refused a program (libbpf's reason in the debug log)";
    }
    return "unknown bpf error " + std::to_string(v);
  }
};

// libbpf's messages, verifier logs included, go to the "bpf" log at debug level.
int print_libbpf(libbpf_print_level, const char* format, va_list args) noexcept {
  va_list again;
  va_copy(again, args);
  std::string text(std::max(0, std::vsnprintf(nullptr, 0, format, args)), '\0');
  std::vsnprintf(text.data(), text.size() + 1, format, again);
  va_end(again);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  logger("bpf")->debug("libbpf: {}", text);
  return 0;
}

std::unexpected<std::error_code> fail_bpf(const char* what, int e) {
  logger("bpf")->debug("{}: {}", what, std::strerror(e));
  return fail(e == EPERM || e == EACCES ? bpf_errc::not_permitted : bpf_errc::refused);
}

}  // namespace

const std::error_category& bpf_category() noexcept {
  static const category instance;
  return instance;
}

result<uint64_t> cgroup_id(int dir_fd) {
  struct statfs fs {};
  struct stat st {};
  if (::fstatfs(dir_fd, &fs) != 0 || ::fstat(dir_fd, &st) != 0) return fail_errno(errno);
  if (fs.f_type != CGROUP2_SUPER_MAGIC || !S_ISDIR(st.st_mode)) return fail_errno(ENOTDIR);
  return static_cast<uint64_t>(st.st_ino);
}

void cpu_meter::skeleton_deleter::operator()(cpu_bpf* s) const noexcept { cpu_bpf__destroy(s); }
void cpu_meter::ring_deleter::operator()(ring_buffer* r) const noexcept { ring_buffer__free(r); }

result<std::unique_ptr<cpu_meter>> cpu_meter::open(const options& o) {
  static std::once_flag print_set;
  std::call_once(print_set, [] { libbpf_set_print(print_libbpf); });
  if (::access(vmlinux_btf, R_OK) != 0) return fail(bpf_errc::no_btf);
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

  m->slot_of_fd_ = bpf_map__fd(s.maps.slot_of);
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  m->slots_bytes_ = (o.max_cgroups * sizeof(cpu_slot) + page - 1) / page * page;
  void* mapped = ::mmap(nullptr, m->slots_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(s.maps.slots), 0);
  if (mapped == MAP_FAILED) return fail_bpf("map the slots", errno);
  m->slots_ = static_cast<cpu_slot*>(mapped);
  for (uint32_t i = 0; i < o.max_cgroups; ++i) m->free_.push_back(i);
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

cpu_meter::~cpu_meter() {
  if (slots_) ::munmap(slots_, slots_bytes_);
}

cpu_slot* cpu_meter::slot(uint64_t cgroup_id) const {
  auto it = watched_.find(cgroup_id);
  return it == watched_.end() ? nullptr : &slots_[it->second];
}

result<void> cpu_meter::watch(uint64_t cgroup_id) {
  std::lock_guard lock(mu_);
  if (watched_.contains(cgroup_id)) return fail_errno(EEXIST);
  if (free_.empty()) return fail_errno(E2BIG);
  const uint32_t i = free_.front();
  slots_[i] = cpu_slot{};
  if (int r = bpf_map_update_elem(slot_of_fd_, &cgroup_id, &i, BPF_NOEXIST); r != 0) return fail_errno(-r);
  free_.pop_front();
  watched_.emplace(cgroup_id, i);
  return {};
}

// A task of the old cgroup still being counted as its slot is freed would add to whoever
// gets it next: the slot goes to the back of the queue, thousands of watches away.
result<void> cpu_meter::unwatch(uint64_t cgroup_id) {
  std::lock_guard lock(mu_);
  auto it = watched_.find(cgroup_id);
  if (it == watched_.end()) return fail_errno(ENOENT);
  std::atomic_ref(slots_[it->second].kill_at).store(0, std::memory_order_release);
  if (int r = bpf_map_delete_elem(slot_of_fd_, &cgroup_id); r != 0) return fail_errno(-r);
  free_.push_back(it->second);
  watched_.erase(it);
  return {};
}

result<int64_t> cpu_meter::cpu_ns(uint64_t cgroup_id) const {
  std::lock_guard lock(mu_);
  cpu_slot* s = slot(cgroup_id);
  if (!s) return fail_errno(ENOENT);
  return static_cast<int64_t>(std::atomic_ref(s->ns).load(std::memory_order_relaxed));
}

result<void> cpu_meter::arm(uint64_t cgroup_id, int64_t budget_ns, std::optional<int64_t> counted_ns) {
  if (budget_ns <= 0) return fail_errno(EINVAL);
  std::lock_guard lock(mu_);
  cpu_slot* s = slot(cgroup_id);
  if (!s) return fail_errno(ENOENT);
  const __u64 now = counted_ns ? static_cast<__u64>(*counted_ns) : std::atomic_ref(s->ns).load(std::memory_order_relaxed);
  std::atomic_ref(s->kill_at).store(0, std::memory_order_relaxed);
  std::atomic_ref(s->armed_at).store(now, std::memory_order_relaxed);
  std::atomic_ref(s->gen).store(++arming_, std::memory_order_relaxed);
  std::atomic_ref(s->kill_at).store(now + static_cast<__u64>(budget_ns), std::memory_order_release);
  return {};
}

result<void> cpu_meter::disarm(uint64_t cgroup_id) {
  std::lock_guard lock(mu_);
  if (cpu_slot* s = slot(cgroup_id)) std::atomic_ref(s->kill_at).store(0, std::memory_order_release);
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
