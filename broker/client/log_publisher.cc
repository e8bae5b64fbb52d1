#include "broker/client/log_publisher.h"

#include <algorithm>

#include "broker/client/subjects.h"
#include "common/clock.h"
#include "common/log.h"

namespace fnmesh::broker {
namespace {

auto log() { return fnmesh::logger("logs"); }

constexpr int64_t warning_interval_ns = 60'000'000'000;

flatbuffers::Offset<flatbuffers::String> text(flatbuffers::FlatBufferBuilder& fbb,
                                              std::string_view s) {
  return fbb.CreateString(s.data(), s.size());
}

}  // namespace

bool token_bucket::take(int64_t now_ns, const log_limits& limits) noexcept {
  if (tokens < 0) {
    tokens = limits.burst;
  } else {
    const double refill = double(now_ns - refilled_ns) * 1e-9 * limits.lines_per_s;
    tokens = std::min(limits.burst, tokens + std::max(0.0, refill));
  }
  refilled_ns = now_ns;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

std::span<const uint8_t> encode_log_line(flatbuffers::FlatBufferBuilder& fbb, const log_line& l,
                                         size_t max_line_bytes) {
  std::string_view line = l.line;
  if (line.size() > max_line_bytes) {
    size_t cut = max_line_bytes;
    while (cut > 0 && (uint8_t(line[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
    line = line.substr(0, cut);
  }
  fbb.Clear();
  auto tenant = text(fbb, l.tenant), function = text(fbb, l.function),
       version = text(fbb, l.version), invocation = text(fbb, l.invocation_id),
       node = text(fbb, l.node_id), sandbox = text(fbb, l.sandbox), body = text(fbb, line);
  fbb.Finish(proto::CreateLogLine(fbb, tenant, function, version, invocation, node, sandbox,
                                  l.stream, body, l.time_ns));
  return proto::bytes(fbb);
}

log_publisher::log_publisher(connection& conn, log_limits limits)
    : conn_(conn), limits_(limits) {}

bool log_publisher::publish(const log_line& l) {
  const int64_t now_ns = mono_now_ns();
  key_.assign(l.tenant).append(".").append(l.function);
  auto it = functions_.find(key_);
  if (it == functions_.end())
    it = functions_.emplace(key_, function_state{logs_subject(l.tenant, l.function), {}}).first;
  if (!it->second.budget.take(now_ns, limits_)) {
    count_drop(l, now_ns, "over the rate limit");
    return false;
  }
  if (l.line.size() > limits_.max_line_bytes) truncated_.fetch_add(1, std::memory_order_relaxed);
  const auto bytes = encode_log_line(fbb_, l, limits_.max_line_bytes);
  const natsStatus s = natsConnection_Publish(conn_.nats(), it->second.subject.c_str(),
                                              bytes.data(), int(bytes.size()));
  if (s != NATS_OK) {
    count_drop(l, now_ns, natsStatus_GetText(s));
    return false;
  }
  published_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void log_publisher::count_drop(const log_line& l, int64_t now_ns, const char* why) {
  dropped_.fetch_add(1, std::memory_order_relaxed);
  ++dropped_since_warning_;
  if (last_warning_ns_ != 0 && now_ns - last_warning_ns_ < warning_interval_ns) return;
  log()->warn("dropped {} log line(s) since the last warning; the last one of {}/{}: {} "
              "({:.0f} lines/s per function)",
              dropped_since_warning_, l.tenant, l.function, why, limits_.lines_per_s);
  last_warning_ns_ = now_ns;
  dropped_since_warning_ = 0;
}

}  // namespace fnmesh::broker
