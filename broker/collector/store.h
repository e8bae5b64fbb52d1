#pragma once
// store: the billing collector's SQLite database (WAL): one row per (invocation id,
// attempt) in `activations` (the Result) and in `usage` (the metering), so a replayed
// completion is ignored, never counted twice. Owns the connection and its prepared
// statements; one thread uses it (the collector's loop).
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/result.h"
#include "flatbuffers/proto.h"

namespace fnmesh::collector {

// Errors from SQLite, with its extended result codes.
const std::error_category& sqlite_category() noexcept;

struct ingest_outcome {
  uint64_t last_seq = 0;     // the highest spool seq in the batch (all of them are safe)
  uint32_t stored = 0;       // completions new to the store
  uint32_t duplicates = 0;   // completions already stored (replays)
  uint32_t rejected = 0;     // completions without an invocation id, result or usage
};

enum class grouping { function, tenant, node, hour, day };
// "function" | "tenant" | "node" | "hour" | "day"; "" means function.
std::optional<grouping> parse_grouping(std::string_view name) noexcept;

struct usage_filter {
  std::string tenant;    // "" = all
  std::string function;  // "" = all
  int64_t since_ns = 0;  // finished at or after (unix ns)
  int64_t until_ns = 0;  // finished before; 0 = no bound
  grouping group_by = grouping::function;
};

// One group's totals: exact sums of the stored records.
struct usage_row {
  std::string key;
  uint64_t invocations = 0;
  uint64_t errors = 0;        // status != ok
  uint64_t billed_ms = 0;
  double gb_seconds = 0;      // sum(billed_ms / 1000 * memory_limit_bytes / 2^30)
  uint64_t cpu_ns = 0;        // user + system
  int64_t peak_memory_bytes = 0;  // the largest single peak
  uint64_t cold_starts = 0;
};

// One stored attempt, as both tables hold it.
struct stored_attempt {
  std::string invocation_id;
  uint32_t attempt = 0;
  std::string tenant;
  std::string function;
  proto::Status status = proto::Status::ok;
  std::vector<uint8_t> output;
  std::string content_type;
  std::string error;
  std::string node_id;
  bool cold_start = false;
  int64_t queued_ns = 0;
  int64_t started_ns = 0;
  int64_t finished_ns = 0;
  bool has_usage = false;
  uint64_t node_seq = 0;
  int64_t wall_ns = 0;
  int64_t cpu_user_ns = 0;
  int64_t cpu_system_ns = 0;
  int64_t peak_memory_bytes = 0;
  int64_t memory_limit_bytes = 0;
  int64_t net_rx_bytes = 0;
  int64_t net_tx_bytes = 0;
  int64_t billed_ms = 0;
  proto::AccountingSource source = proto::AccountingSource::rusage;
  proto::Trigger trigger = proto::Trigger::cli;
  int64_t recorded_ns = 0;
};

class store {
 public:
  struct db_closer {
    void operator()(sqlite3* db) const noexcept { sqlite3_close(db); }
  };
  struct statement_finalizer {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
  };
  using db_ptr = std::unique_ptr<sqlite3, db_closer>;
  using statement = std::unique_ptr<sqlite3_stmt, statement_finalizer>;

  // Opens or creates the database (and its parent directory), in WAL mode.
  // `synchronous_full`: fsync at every commit (survives a power cut; the default), else
  // NORMAL (survives a process kill).
  static result<store> open(const std::filesystem::path& path, bool synchronous_full = true);

  // Stores a batch in one transaction; replays are ignored and counted as duplicates.
  // Returns only after the commit: the caller may then ack.
  result<ingest_outcome> ingest(const proto::CompletionBatch& batch);
  result<std::vector<usage_row>> usage(const usage_filter& filter);
  // Every stored attempt of one invocation, oldest first; empty when unknown.
  result<std::vector<stored_attempt>> activation(std::string_view invocation_id);

  // The text of the last SQLite error on this connection.
  std::string last_error() const;

 private:
  store() = default;
  result<void> exec(const char* sql);
  result<statement> prepare(const std::string& sql);
  result<uint32_t> insert(const proto::Completion& c, uint64_t spool_seq, int64_t now_ns);

  db_ptr db_;
  statement begin_;
  statement commit_;
  statement rollback_;
  statement insert_activation_;
  statement insert_usage_;
  statement select_activation_;
  std::vector<statement> usage_by_;  // indexed by grouping
};

}  // namespace fnmesh::collector
