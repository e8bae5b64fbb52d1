#pragma once
// log_publisher: a handler's stdout/stderr lines as LogLine messages on
// fnmesh.logs.<tenant>.<function>, which stream FNMESH_LOGS stores. Plain core NATS
// publishes (a buffered socket write, no JetStream ack awaited), so a function that prints
// a lot never slows invocations: lines over a per-function rate are counted and dropped
// (one warning a minute at most), longer lines are cut.
// Owns an encode buffer and one budget per function. publish() is called from ONE thread
// (the executor's loop thread); the counters may be read from any thread.
#include <flatbuffers/flatbuffers.h>

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "broker/client/connection.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {

// One line as read from a sandbox's pipe, without its newline. Views, read during the call.
struct log_line {
  std::string_view tenant;
  std::string_view function;
  std::string_view version;
  std::string_view invocation_id;  // empty for a line printed outside an invocation
  std::string_view node_id;
  std::string_view sandbox;
  proto::LogStream stream = proto::LogStream::stdout;
  std::string_view line;
  int64_t time_ns = 0;             // unix ns when the node read it
};

struct log_limits {
  double lines_per_s = 1000;          // per function (tenant + name), sustained
  double burst = 1000;                // lines a quiet function may print at once
  size_t max_line_bytes = 16u << 10;  // longer lines are cut at a UTF-8 boundary
};

// A token bucket: starts full with `burst` tokens, refilled at `lines_per_s`.
struct token_bucket {
  double tokens = -1;  // < 0: not used yet (full)
  int64_t refilled_ns = 0;
  // Takes one token at monotonic time now_ns; false when none is left.
  bool take(int64_t now_ns, const log_limits& limits) noexcept;
};

// Encodes `l` as a LogLine into `fbb` (cleared first), the line cut to max_line_bytes.
// The span points into fbb.
std::span<const uint8_t> encode_log_line(flatbuffers::FlatBufferBuilder& fbb, const log_line& l,
                                         size_t max_line_bytes);

class log_publisher {
 public:
  explicit log_publisher(connection& conn, log_limits limits = {});

  // Publishes one line; false when it was dropped: over its function's rate, or refused
  // by the connection (closed, or its reconnect buffer full while NATS is away).
  bool publish(const log_line& l);

  uint64_t published() const noexcept { return published_.load(std::memory_order_relaxed); }
  uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  uint64_t truncated() const noexcept { return truncated_.load(std::memory_order_relaxed); }

 private:
  struct function_state {
    std::string subject;  // fnmesh.logs.<tenant>.<function>
    token_bucket budget;
  };
  void count_drop(const log_line& l, int64_t now_ns, const char* why);

  connection& conn_;
  log_limits limits_;
  flatbuffers::FlatBufferBuilder fbb_{1024};
  std::string key_;  // reused lookup key <tenant>.<function>
  std::unordered_map<std::string, function_state> functions_;  // one per function seen
  int64_t last_warning_ns_ = 0;
  uint64_t dropped_since_warning_ = 0;
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> truncated_{0};
};

}  // namespace fnmesh::broker
