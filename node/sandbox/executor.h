#pragma once
// executor: runs invocations in worker processes (the stand-in for real sandboxes, which
// come with issue 3 behind this same interface). Owns one event-loop thread (epoll over
// every worker's fd 3 socket, stdout/stderr pipes, pidfds and deadline timers) and the
// warm pool: idle workers per (tenant, function, version) are reused (python3, native),
// a new one starts when none is idle (one per concurrent invocation); `exec` starts one
// process per invocation. run() is thread-safe; callbacks run on the loop thread and
// must neither block nor throw.
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
#include "flatbuffers/proto.h"

namespace fnmesh::node {

struct executor_options {
  std::filesystem::path python = "/usr/bin/python3";
  std::filesystem::path python_shim;           // node/runtimes/python/shim.py
  std::filesystem::path python_proto_dir;      // build/python (generated fnmesh.proto module)
  std::chrono::seconds keep_warm{300};         // idle workers stop after this
  size_t stderr_tail_bytes = 4096;             // kept for error reports
  // After handing work to a warm worker that usually answers within this time, the loop
  // polls for this long before it blocks (0 = never). Off by default: on our 2-vCPU
  // machines spinning made warm round trips slower (native echo 38 -> 64 us).
  std::chrono::microseconds spin{0};
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
  // Usage, accounting source rusage: one-shot `exec` processes report wait4() rusage;
  // warm workers report the difference of /proc/<pid>/stat utime/stime across the
  // invocation (clock-tick resolution) and VmHWM, reset through /proc/<pid>/clear_refs
  // before each warm invocation (so: the peak RSS during it; a cold start's includes
  // the runtime's start-up).
  int64_t cpu_user_ns = 0;
  int64_t cpu_system_ns = 0;
  int64_t peak_memory_bytes = 0;
  pid_t worker_pid = 0;              // the process that ran it (0: none was started)
};

struct work {
  broker::function_ptr function;          // the spec it runs under
  std::filesystem::path code_dir;         // unpacked bundle (read-only to the worker)
  std::vector<uint8_t> invocation;        // a verified Invocation buffer, sent as is
  std::chrono::milliseconds timeout;      // wall clock; past it the worker is killed
  std::function<void(outcome&&)> done;    // called once, on the loop thread
};

class executor {
 public:
  explicit executor(executor_options opts);   // throws on start-up failure (epoll, thread)
  ~executor();  // kills every worker, joins the loop; what still runs completes as crashed

  void run(work w);
  // Stops taking work (later run() calls complete at once with status rejected); waits
  // for what runs, then kills idle workers and returns once every worker process is
  // gone. Must not be called on the loop thread.
  void drain();

  // Runs fn on the loop thread (for callers that must touch loop-owned state).
  void post(std::function<void()> fn);

  // Live reusable workers (python3, native), idle or busy.
  size_t warm_workers() const noexcept;
  // The same per "tenant/function" (for the heartbeat); thread-safe.
  std::vector<std::pair<std::string, size_t>> warm_by_function() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace fnmesh::node
