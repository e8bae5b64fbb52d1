#pragma once
// executor: runs invocations in sandboxes (DESIGN §4, §5). Owns one event-loop thread
// (epoll over every sandbox's fd 3 socket, stdout/stderr pipes, pidfds and deadline
// timers), a oneTBB task arena in which sandboxes are started (cold starts never stall
// the loop), and the warm pool: idle sandboxes per (tenant, function, version) are reused
// one invocation at a time (python3, nodejs, native) and stopped after keep_warm; a new
// one starts when none is idle; `exec` starts one sandbox per invocation. run() is
// thread-safe; callbacks run on the loop thread and must neither block nor throw.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "broker/client/function_registry.h"
#include "broker/client/log_publisher.h"
#include "flatbuffers/proto.h"
#include "node/sandbox/launcher.h"

namespace fnmesh::node {

struct executor_options {
  launcher_options sandboxes;
  std::chrono::seconds keep_warm{300};         // idle sandboxes stop after this
  // Memory of all live sandboxes (their limits) stays within this: a cold start first
  // stops the longest-idle sandboxes of any function. 0: no budget.
  int64_t memory_budget_bytes = 0;
  size_t stderr_tail_bytes = 4096;             // kept for error reports
  // After handing work to a warm sandbox that usually answers within this time, the loop
  // polls for this long before it blocks (0 = never). Off by default: on our 2-vCPU
  // machines spinning made warm round trips slower (native echo 38 -> 64 us).
  std::chrono::microseconds spin{0};
  // Each line a sandbox prints (loop thread; the views last for the call).
  std::function<void(const broker::log_line&)> on_log;
  // Count CPU with the BPF meter (node/bpf), where it loads: exact, and each invocation's
  // CPU budget (its timeout x its CPU share) is enforced by the kernel. Else cgroups.
  // Likewise the BPF net guard counts each sandbox's traffic and enforces its network
  // policy; without it none and loopback are a network namespace of the sandbox's own,
  // host is the host's, and a function with an allow-list is refused (status error).
  bool bpf = true;
};

// What one invocation did, as the node reports it.
struct outcome {
  proto::Status status = proto::Status::ok;
  std::vector<uint8_t> output;
  std::string content_type;
  std::string error;                 // handler error text or stderr tail
  bool cold_start = false;
  int64_t started_ns = 0;            // unix ns
  int64_t finished_ns = 0;
  // Usage: the CPU time and peak memory of every process in the sandbox during the
  // invocation (the peak is reset before each warm invocation; a cold start's includes the
  // runtime's start-up). CPU from the BPF meter (source bpf: its total, split into user
  // and system as the cgroup saw it) or from the cgroup (source cgroup).
  proto::AccountingSource source = proto::AccountingSource::cgroup;
  int64_t cpu_user_ns = 0;
  int64_t cpu_system_ns = 0;
  int64_t peak_memory_bytes = 0;
  // Network: the bytes of the IP packets the sandbox's sockets sent and received, and the
  // connects and sends its network policy refused (EPERM), during the invocation; from the
  // BPF net guard. Without it, a sandbox with a network namespace of its own reports its
  // loopback's counters, and one on the host's network 0.
  int64_t net_rx_bytes = 0;
  int64_t net_tx_bytes = 0;
  int64_t net_refused = 0;
  pid_t worker_pid = 0;              // the sandbox's process on the host (0: none was started)
  std::string sandbox;               // the sandbox's name (its cgroup directory)
};

struct work {
  broker::function_ptr function;          // the spec it runs under
  std::filesystem::path code_dir;         // unpacked bundle (read-only at /var/task)
  std::vector<uint8_t> invocation;        // a verified Invocation buffer, sent as is
  std::chrono::milliseconds timeout;      // wall clock; past it the sandbox is killed
  std::function<void(outcome&&)> done;    // called once, on the loop thread
};

class executor {
 public:
  // Throws with one clear line on start-up failure (not root, no cgroups, epoll).
  explicit executor(executor_options opts);
  ~executor();  // kills every sandbox, joins the loop; what still runs completes as crashed

  void run(work w);
  // Stops taking work (later run() calls complete at once with status rejected); waits
  // for what runs, then kills idle sandboxes and returns once every sandbox is gone.
  // Must not be called on the loop thread.
  void drain();

  // Runs fn on the loop thread (for callers that must touch loop-owned state).
  void post(std::function<void()> fn);

  // Live reusable sandboxes (python3, nodejs, native), idle or busy.
  size_t warm_workers() const noexcept;
  // The same per "tenant/function" (for the heartbeat); thread-safe.
  std::vector<std::pair<std::string, size_t>> warm_by_function() const;
  // Those of one function_of(spec) (for placement); thread-safe.
  size_t warm_of(const std::string& function) const;
  // "tenant/function": how warm sandboxes are counted.
  static std::string function_of(const proto::FunctionSpec& spec);
  // What the cgroup tree found, for the start-up log.
  std::string describe() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace fnmesh::node
