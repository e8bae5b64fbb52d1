#pragma once
// scheduler: the cron schedules of one tenant's functions — taken from their specs and
// kept current through the function registry's change handler — and the loop that sleeps
// until the next due tick and publishes it, retrying a failed publish. update(), stop()
// and the counters: any thread; run(): the one scheduler thread.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "common/result.h"
#include "trigger-adapters/cron/schedule.h"

namespace fnmesh::cron {

// One tick of one expression of one function.
struct tick {
  std::string function;
  std::string expression;  // as written in the spec
  std::chrono::sys_seconds time;
};

// The tick's invocation id: a ULID whose time part is the tick, the rest a hash of
// "<tenant>.<function>" — every adapter instance publishes the same id for the same tick,
// and JetStream's duplicate window keeps one (also when two expressions of one function
// fall on the same instant: the function runs once at that time).
std::string invocation_id(std::string_view tenant, const tick& t);
// {"schedule":"*/5 * * * *","tick":"2026-11-27T21:05:00Z","function":"x"}
std::string payload(const tick& t);
// Publishes the tick's async invocation (trigger cron, source = the expression) and waits
// for the stream's ack; errc::unavailable at once while the connection is down.
result<void> publish(broker::invoker& invoker, std::string_view tenant, const tick& t);

class scheduler {
 public:
  using publish_fn = std::function<result<void>(const tick&)>;

  // A tick whose publish fails is retried every `retry_every` until it is published or
  // older than `retry_for` (below JetStream's 2-minute duplicate window).
  explicit scheduler(std::string tenant, std::chrono::seconds retry_for = std::chrono::seconds(60),
                     std::chrono::milliseconds retry_every = std::chrono::milliseconds(500));

  // The registry's change handler: a function deployed or changed (record) or removed
  // (nullptr). Functions of other tenants are ignored; a bad expression is logged and
  // skipped. An expression kept across a change keeps its next tick.
  void update(const std::string& key, const broker::function_ptr& record);

  // Publishes ticks as they fall due until stop(). A schedule's first tick is the first
  // after update() saw it: ticks missed while no adapter ran are not published (no backfill).
  void run(const publish_fn& publish);
  void stop();

  size_t schedules() const noexcept { return schedules_; }
  uint64_t ticks_published() const noexcept { return published_; }
  uint64_t publish_failures() const noexcept { return failures_; }
  std::string metrics() const;  // Prometheus text

 private:
  struct armed {
    std::string function;
    std::string expression;
    schedule when;
    std::chrono::sys_seconds next;
  };
  struct retry {
    tick due;
    std::chrono::system_clock::time_point at;
    int attempts = 0;
  };
  // Publishes, or puts the tick back in `retries` (lock not held).
  void attempt(const publish_fn& publish, tick due, int attempts, std::vector<retry>& retries);

  const std::string tenant_;
  const std::chrono::seconds retry_for_;
  const std::chrono::milliseconds retry_every_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<armed> armed_;  // guarded by mutex_
  bool stopping_ = false;     // guarded by mutex_
  std::atomic<size_t> schedules_{0};
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> failures_{0};
};

}  // namespace fnmesh::cron
