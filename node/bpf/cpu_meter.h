#pragma once
// cpu_meter: CPU time per sandbox counted in the kernel, and CPU budgets the kernel enforces
// (DESIGN §6). It owns the BPF programs of cpu.bpf.c, loaded and attached: at every context
// switch the outgoing task's runtime since it was last counted (the difference of its
// sum_exec_runtime, the scheduler's own figure; a dead task's last switch counts its end)
// is added to its cgroup's counter, and after every hrtimer expiry (the scheduler tick
// among them) the same is done for the running task, so that a task that never leaves its
// CPU is still counted and stopped. Past an armed budget the program itself sends SIGKILL
// to the running task, and one event per arming to a ring buffer. A budget is overshot by
// at most a tick (4 ms at HZ=250) plus the task's exit; on nohz_full CPUs, where a lone
// task gets no tick, by up to a second.
// Sandboxes are keyed by their cgroup v2 id (cgroup_id()). A task counts from its birth:
// it must be born in the cgroup (clone3 CLONE_INTO_CGROUP), not moved in. Tasks of
// unwatched cgroups cost one map lookup per switch and per timer.
// Each watched cgroup has a slot in an array this process maps into its memory: reading a
// counter and arming or disarming a budget are loads and stores, no system call; watch()
// and unwatch() are one bpf(2) call each.
//
// Threads: every member may be called from any thread, except drain(): one thread at a
// time, e.g. the node's epoll loop on events_fd().
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "node/bpf/bpf.h"
#include "node/bpf/support.h"

struct cpu_bpf;
struct ring_buffer;

namespace fnmesh::node {

// A cgroup passed its budget: the kernel sent SIGKILL.
struct cpu_kill {
  uint64_t cgroup_id = 0;
  int64_t used_ns = 0;  // CPU time since arm()
};

// A program's own run time while bpf stats are on (enable_stats()).
struct bpf_prog_stats {
  std::string name;
  uint64_t run_ns = 0;
  uint64_t runs = 0;
};

class cpu_meter {
 public:
  struct options {
    uint32_t max_cgroups = 4096;  // watched at once
    bool debug = false;           // the programs log each SIGKILL to trace_pipe
  };

  // Loads and attaches the programs. Fails with a bpf_errc.
  static result<std::unique_ptr<cpu_meter>> open(const options& o);
  ~cpu_meter();
  cpu_meter(const cpu_meter&) = delete;
  cpu_meter& operator=(const cpu_meter&) = delete;

  // Starts counting a cgroup's tasks, from 0 (EEXIST if watched; E2BIG past max_cgroups).
  // A task already running in it brings all it ran since its birth at its next switch.
  result<void> watch(uint64_t cgroup_id);
  // Stops counting and disarms (ENOENT if not watched). Call it once the cgroup's tasks
  // have exited.
  result<void> unwatch(uint64_t cgroup_id);
  // CPU time of the cgroup's tasks since watch(), up to their last switch or timer
  // (ENOENT if not watched).
  result<int64_t> cpu_ns(uint64_t cgroup_id) const;

  // Kills the cgroup's running tasks once they use budget_ns (> 0) more CPU time than now
  // (or than `counted_ns`, a cpu_ns() the caller read earlier), and sends one cpu_kill.
  // Replaces an earlier arming.
  result<void> arm(uint64_t cgroup_id, int64_t budget_ns, std::optional<int64_t> counted_ns = std::nullopt);
  result<void> disarm(uint64_t cgroup_id);  // not armed is fine

  // Readable when drain() has events.
  int events_fd() const noexcept;
  // Calls on_kill for each event waiting, without blocking; returns how many.
  size_t drain(const std::function<void(const cpu_kill&)>& on_kill);

  // Turns on the kernel's BPF run-time statistics while the descriptor is open.
  static result<unique_fd> enable_stats();
  std::vector<bpf_prog_stats> prog_stats() const;

 private:
  struct skeleton_deleter {
    void operator()(cpu_bpf* s) const noexcept;
  };
  struct ring_deleter {
    void operator()(ring_buffer* r) const noexcept;
  };
  cpu_meter() = default;

  std::unique_ptr<cpu_bpf, skeleton_deleter> skel_;
  std::unique_ptr<ring_buffer, ring_deleter> events_;
  mutable std::mutex mutex_;
  slot_table slots_;     // of struct cpu_slot (cpu.h)
  uint64_t arming_ = 0;  // the last budget generation
  const std::function<void(const cpu_kill&)>* on_kill_ = nullptr;  // during drain()
};

}  // namespace fnmesh::node
