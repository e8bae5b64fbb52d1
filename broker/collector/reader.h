#pragma once
// reader: the collector's queries, on its own read-only connection to the database the
// store writes (WAL: reads never wait for ingest, nor ingest for reads). Usage totals are
// exact integer sums of the stored records: whole hours inside the window come from
// `usage_hourly`, the partial hours at its edges from the records themselves. Owns the
// connection and its prepared statements; one thread uses it.
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/collector/sqlite.h"
#include "common/result.h"
#include "flatbuffers/proto.h"

namespace fnmesh::collector {

enum class grouping { function, tenant, node, hour, day };
// "function" | "tenant" | "node" | "hour" | "day".
std::optional<grouping> parse_grouping(std::string_view name) noexcept;

inline constexpr int64_t no_time_bound = INT64_MAX;

struct usage_filter {
  std::string tenant;    // "" = all
  std::string function;  // "" = all
  std::string node;      // "" = all
  int64_t since_ns = 0;               // finished at or after (unix ns)
  int64_t until_ns = no_time_bound;   // finished before
  grouping group_by = grouping::function;
};

// One group's totals: exact sums of the stored records.
struct usage_row {
  std::string key;
  int64_t invocations = 0;
  int64_t errors = 0;             // status != ok
  int64_t cold_starts = 0;
  int64_t billed_ms = 0;
  int64_t memory_mb_ms = 0;       // billed ms x configured MB
  int64_t cpu_ns = 0;             // user + system
  int64_t peak_memory_bytes = 0;  // the largest single peak
  int64_t peak_memory_mb_ms = 0;  // peak MB x wall ms, per record
  int64_t network_bytes = 0;      // received + sent
  int64_t cost_lambda_pusd = 0;
  int64_t cost_usage_pusd = 0;
};

// Adds another group's sums (the key stays); the peak is the larger of the two.
inline usage_row& operator+=(usage_row& total, const usage_row& r) {
  total.invocations += r.invocations;
  total.errors += r.errors;
  total.cold_starts += r.cold_starts;
  total.billed_ms += r.billed_ms;
  total.memory_mb_ms += r.memory_mb_ms;
  total.cpu_ns += r.cpu_ns;
  total.peak_memory_bytes = std::max(total.peak_memory_bytes, r.peak_memory_bytes);
  total.peak_memory_mb_ms += r.peak_memory_mb_ms;
  total.network_bytes += r.network_bytes;
  total.cost_lambda_pusd += r.cost_lambda_pusd;
  total.cost_usage_pusd += r.cost_usage_pusd;
  return total;
}

struct activation_filter {
  std::string tenant;
  std::string function;
  std::string status;  // a proto::Status name, "" = all
  int64_t since_ns = 0;
  int64_t until_ns = no_time_bound;
  int limit = 50;
};

// One stored attempt, as both tables hold it.
struct stored_attempt {
  std::string invocation_id;
  uint32_t attempt = 0;
  std::string tenant;
  std::string function;
  proto::Status status = proto::Status::ok;
  std::vector<uint8_t> output;  // empty in lists
  int64_t output_bytes = 0;
  bool output_expired = false;
  std::string content_type;
  std::string error;
  std::string node_id;
  bool cold_start = false;
  int64_t queued_ns = 0;
  int64_t started_ns = 0;
  int64_t finished_ns = 0;
  uint64_t node_seq = 0;
  int64_t wall_ns = 0;
  int64_t cpu_user_ns = 0;
  int64_t cpu_system_ns = 0;
  int64_t peak_memory_bytes = 0;
  int64_t memory_limit_bytes = 0;
  int64_t memory_mb = 0;
  int64_t net_rx_bytes = 0;
  int64_t net_tx_bytes = 0;
  int64_t billed_ms = 0;
  proto::AccountingSource source = proto::AccountingSource::rusage;
  proto::Trigger trigger = proto::Trigger::cli;
  int64_t recorded_ns = 0;
  int64_t cost_lambda_pusd = 0;
  int64_t cost_usage_pusd = 0;
};

class reader {
 public:
  // Opens the database the store created, read-only. Throws std::runtime_error naming
  // the file (start-up only).
  static reader open(const std::filesystem::path& path);

  result<std::vector<usage_row>> usage(const usage_filter& filter);
  // Attempts newest first (by finish time), without their output.
  result<std::vector<stored_attempt>> activations(const activation_filter& filter);
  // Every stored attempt of one invocation, oldest first, with its output; empty when
  // unknown.
  result<std::vector<stored_attempt>> activation(std::string_view invocation_id);

 private:
  reader() = default;
  result<std::vector<stored_attempt>> attempts(sqlite3_stmt* s, bool with_output);

  db_ptr db_;
  std::vector<statement> usage_by_;  // indexed by grouping
  std::array<statement, 8> lists_;  // by the filters given (reader.cc list_sql)
  statement by_id_;
};

}  // namespace fnmesh::collector
