#pragma once
// What the fswatch adapter did since it started, for /metrics: written by its watcher and
// publisher threads, read from any thread.
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "trigger-adapters/fswatch/file_event.h"

namespace fnmesh::fswatch {

struct counters {
  std::array<std::atomic<uint64_t>, std::size(all_event_kinds)> events{};  // by event_kind
  std::atomic<uint64_t> invocations{0};       // invocations acked by the stream
  std::atomic<uint64_t> publishes{0};         // invocations handed to NATS, retries included
  std::atomic<uint64_t> publish_failures{0};  // publish rounds that failed and were retried
  std::atomic<uint64_t> overflows{0};         // IN_Q_OVERFLOW: events the kernel dropped
  std::atomic<uint64_t> watched_folders{0};

  void count(event_kind k) noexcept { events[size_t(k)].fetch_add(1, std::memory_order_relaxed); }
};

// The Prometheus text of `c` (fnmesh_fswatch_*).
std::string render_metrics(const counters& c);

}  // namespace fnmesh::fswatch
