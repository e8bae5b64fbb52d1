#pragma once
// store: the billing collector's SQLite database (WAL) as the ingest side writes it. One
// row per (invocation id, attempt) in `activations` (the Result) and in `usage` (the
// metering record with both models' costs, same rowid), so a replayed completion is
// ignored, never counted twice; `usage_hourly` holds each (tenant, function, node, hour)'s
// sums, kept in the same transaction, so long-range queries read hours instead of
// records. Owns the write connection and its prepared statements; one thread uses it
// (the collector's ZeroMQ loop). Queries go through `reader` (reader.h).
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "broker/collector/prices.h"
#include "broker/collector/sqlite.h"
#include "common/result.h"
#include "flatbuffers/proto.h"

namespace fnmesh::collector {

inline constexpr int64_t schema_version = 2;

struct ingest_outcome {
  uint64_t last_seq = 0;     // the highest spool seq in the batch (all of them are safe)
  uint32_t stored = 0;       // completions new to the store
  uint32_t duplicates = 0;   // completions already stored (replays)
  uint32_t rejected = 0;     // completions without an invocation id, result or usage
};

class store {
 public:
  // Opens or creates the database (and its parent directory) in WAL mode. An existing
  // file must pass SQLite's quick_check and hold this schema version. Throws
  // std::runtime_error with one line naming the file and what is wrong (start-up only).
  // `synchronous_full`: fsync at every commit (survives a power cut), else NORMAL
  // (survives a process kill).
  static store open(const std::filesystem::path& path, const prices& price_list,
                    bool synchronous_full = true);

  // Stores a batch in one transaction; replays are ignored and counted as duplicates.
  // Returns only after the commit: the caller may then ack.
  result<ingest_outcome> ingest(const proto::CompletionBatch& batch);
  // Clears the output of every attempt that finished before `finished_before_ns` (usage
  // stays); returns how many were cleared.
  result<uint64_t> expire_outputs(int64_t finished_before_ns);

  // The text of the last SQLite error on this connection.
  std::string last_error() const;

 private:
  struct hour_key {
    std::string tenant, function, node;
    int64_t hour_ns;
    auto operator<=>(const hour_key&) const = default;
  };
  struct hour_sums {
    int64_t invocations = 0, errors = 0, cold_starts = 0, billed_ms = 0, memory_mb_ms = 0,
            cpu_ns = 0, peak_memory_bytes = 0, peak_memory_mb_ms = 0, network_bytes = 0,
            cost_lambda_pusd = 0, cost_usage_pusd = 0;
  };
  enum class inserted { stored, duplicate, rejected };

  store() = default;
  result<inserted> insert(const proto::Completion& c, uint64_t spool_seq, int64_t now_ns);
  result<void> add_hours();
  result<void> step_done(sqlite3_stmt* s);

  prices prices_;
  db_ptr db_;
  statement begin_, commit_, rollback_;
  statement insert_activation_, insert_usage_, add_hour_, expire_;
  std::map<hour_key, hour_sums> hours_;  // the batch being ingested
  int64_t expired_before_ns_ = 0;        // everything before this is already cleared
};

}  // namespace fnmesh::collector
