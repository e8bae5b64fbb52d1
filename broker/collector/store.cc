#include "broker/collector/store.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "common/clock.h"

namespace fnmesh::collector {
namespace {

class sqlite_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sqlite"; }
  std::string message(int v) const override { return sqlite3_errstr(v); }
};

std::error_code sqlite_error(int rc) { return {rc, sqlite_category()}; }

constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS activations (
  invocation_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  function TEXT NOT NULL,
  status TEXT NOT NULL,
  output BLOB NOT NULL,
  content_type TEXT NOT NULL,
  error TEXT NOT NULL,
  node_id TEXT NOT NULL,
  cold_start INTEGER NOT NULL,
  queued_ns INTEGER NOT NULL,
  started_ns INTEGER NOT NULL,
  finished_ns INTEGER NOT NULL,
  PRIMARY KEY (invocation_id, attempt));
CREATE TABLE IF NOT EXISTS usage (
  invocation_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  function TEXT NOT NULL,
  node_id TEXT NOT NULL,
  node_seq INTEGER NOT NULL,
  wall_ns INTEGER NOT NULL,
  cpu_user_ns INTEGER NOT NULL,
  cpu_system_ns INTEGER NOT NULL,
  peak_memory_bytes INTEGER NOT NULL,
  memory_limit_bytes INTEGER NOT NULL,
  net_rx_bytes INTEGER NOT NULL,
  net_tx_bytes INTEGER NOT NULL,
  cold_start INTEGER NOT NULL,
  billed_ms INTEGER NOT NULL,
  source TEXT NOT NULL,
  trigger TEXT NOT NULL,
  recorded_ns INTEGER NOT NULL,
  PRIMARY KEY (invocation_id, attempt));
CREATE INDEX IF NOT EXISTS activations_finished ON activations (finished_ns);
CREATE INDEX IF NOT EXISTS usage_tenant_function ON usage (tenant, function);
)sql";

constexpr const char* insert_activation_sql =
    "INSERT OR IGNORE INTO activations (invocation_id, attempt, tenant, function, status, "
    "output, content_type, error, node_id, cold_start, queued_ns, started_ns, finished_ns) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

constexpr const char* insert_usage_sql =
    "INSERT OR IGNORE INTO usage (invocation_id, attempt, tenant, function, node_id, "
    "node_seq, wall_ns, cpu_user_ns, cpu_system_ns, peak_memory_bytes, memory_limit_bytes, "
    "net_rx_bytes, net_tx_bytes, cold_start, billed_ms, source, trigger, recorded_ns) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

constexpr const char* select_activation_sql =
    "SELECT a.invocation_id, a.attempt, a.tenant, a.function, a.status, a.output, "
    "a.content_type, a.error, a.node_id, a.cold_start, a.queued_ns, a.started_ns, "
    "a.finished_ns, u.invocation_id IS NOT NULL, u.node_seq, u.wall_ns, u.cpu_user_ns, "
    "u.cpu_system_ns, u.peak_memory_bytes, u.memory_limit_bytes, u.net_rx_bytes, "
    "u.net_tx_bytes, u.billed_ms, u.source, u.trigger, u.recorded_ns "
    "FROM activations a LEFT JOIN usage u "
    "ON u.invocation_id = a.invocation_id AND u.attempt = a.attempt "
    "WHERE a.invocation_id = ?1 ORDER BY a.attempt";

// The group key of each grouping, in the order of enum grouping.
constexpr std::array<const char*, 5> group_keys = {
    "u.function",
    "u.tenant",
    "u.node_id",
    "strftime('%Y-%m-%dT%H:00Z', a.finished_ns / 1000000000, 'unixepoch')",
    "strftime('%Y-%m-%d', a.finished_ns / 1000000000, 'unixepoch')",
};

std::string usage_sql(const char* key) {
  return std::string("SELECT ") + key +
         " AS k, COUNT(*), SUM(a.status != 'ok'), SUM(u.billed_ms), "
         "fnmesh_gb_seconds(u.billed_ms, u.memory_limit_bytes), "
         "SUM(u.cpu_user_ns + u.cpu_system_ns), MAX(u.peak_memory_bytes), SUM(u.cold_start) "
         "FROM usage u JOIN activations a "
         "ON a.invocation_id = u.invocation_id AND a.attempt = u.attempt "
         "WHERE (?1 = '' OR u.tenant = ?1) AND (?2 = '' OR u.function = ?2) "
         "AND a.finished_ns >= ?3 AND (?4 = 0 OR a.finished_ns < ?4) "
         "GROUP BY k ORDER BY k";
}

// Aggregate fnmesh_gb_seconds(billed_ms, memory_limit_bytes): the sum of the products in
// 128-bit integers, divided once at the end, so the total does not depend on row order
// and cannot overflow.
void gb_seconds_step(sqlite3_context* ctx, int, sqlite3_value** argv) noexcept {
  auto* acc = static_cast<unsigned char*>(sqlite3_aggregate_context(ctx, sizeof(__int128)));
  if (!acc) return sqlite3_result_error_nomem(ctx);
  __int128 sum;
  std::memcpy(&sum, acc, sizeof sum);
  sum += __int128(sqlite3_value_int64(argv[0])) * sqlite3_value_int64(argv[1]);
  std::memcpy(acc, &sum, sizeof sum);
}

void gb_seconds_final(sqlite3_context* ctx) noexcept {
  auto* acc = static_cast<unsigned char*>(sqlite3_aggregate_context(ctx, 0));
  __int128 sum = 0;
  if (acc) std::memcpy(&sum, acc, sizeof sum);
  sqlite3_result_double(ctx, double(sum) / (1000.0 * 1073741824.0));
}

// Resets a statement when a call is done with it, whatever path it leaves by.
class statement_use {
 public:
  explicit statement_use(sqlite3_stmt* s) noexcept : s_(s) {}
  ~statement_use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  statement_use(const statement_use&) = delete;
  statement_use& operator=(const statement_use&) = delete;

 private:
  sqlite3_stmt* s_;
};

void bind_text(sqlite3_stmt* s, int i, std::string_view text) {
  sqlite3_bind_text(s, i, text.data() ? text.data() : "", int(text.size()), SQLITE_STATIC);
}

std::string column_text(sqlite3_stmt* s, int i) {
  auto* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p), size_t(sqlite3_column_bytes(s, i)))
           : std::string();
}

template <class E, size_t N>
E enum_from_name(const std::string& name, const std::array<E, N>& values,
                 const char* (*name_of)(E), E fallback) {
  for (E v : values)
    if (name == name_of(v)) return v;
  return fallback;
}

proto::Status status_from(const std::string& name) {
  static const std::array<proto::Status, 8> all = {
      proto::Status::ok,        proto::Status::error,     proto::Status::timeout,
      proto::Status::out_of_memory, proto::Status::cpu_limit, proto::Status::crashed,
      proto::Status::rejected,  proto::Status::no_such_function};
  return enum_from_name(name, all, proto::EnumNameStatus, proto::Status::error);
}

}  // namespace

const std::error_category& sqlite_category() noexcept {
  static const sqlite_error_category instance;
  return instance;
}

std::optional<grouping> parse_grouping(std::string_view name) noexcept {
  if (name.empty() || name == "function") return grouping::function;
  if (name == "tenant") return grouping::tenant;
  if (name == "node") return grouping::node;
  if (name == "hour") return grouping::hour;
  if (name == "day") return grouping::day;
  return std::nullopt;
}

result<store> store::open(const std::filesystem::path& path, bool synchronous_full) {
  if (path.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) return fail(ec);
  }
  store s;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  s.db_.reset(raw);
  if (rc != SQLITE_OK) return fail(sqlite_error(rc));
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, 5000);

  {
    auto wal = s.prepare("PRAGMA journal_mode=WAL");
    if (!wal) return fail(wal.error());
    if (int step = sqlite3_step(wal->get()); step != SQLITE_ROW) return fail(sqlite_error(step));
    if (column_text(wal->get(), 0) != "wal") return fail(sqlite_error(SQLITE_CANTOPEN));
  }
  if (auto r = s.exec(synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      !r)
    return fail(r.error());
  if (auto r = s.exec(schema); !r) return fail(r.error());
  rc = sqlite3_create_function_v2(raw, "fnmesh_gb_seconds", 2,
                                  SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr, nullptr,
                                  gb_seconds_step, gb_seconds_final, nullptr);
  if (rc != SQLITE_OK) return fail(sqlite_error(rc));

  for (auto [target, sql] : {std::pair{&s.begin_, "BEGIN IMMEDIATE"}, {&s.commit_, "COMMIT"},
                             {&s.rollback_, "ROLLBACK"},
                             {&s.insert_activation_, insert_activation_sql},
                             {&s.insert_usage_, insert_usage_sql},
                             {&s.select_activation_, select_activation_sql}}) {
    auto prepared = s.prepare(sql);
    if (!prepared) return fail(prepared.error());
    *target = std::move(*prepared);
  }
  for (const char* key : group_keys) {
    auto prepared = s.prepare(usage_sql(key));
    if (!prepared) return fail(prepared.error());
    s.usage_by_.push_back(std::move(*prepared));
  }
  return s;
}

std::string store::last_error() const { return db_ ? sqlite3_errmsg(db_.get()) : "not open"; }

result<void> store::exec(const char* sql) {
  int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return fail(sqlite_error(rc));
  return {};
}

result<store::statement> store::prepare(const std::string& sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db_.get(), sql.c_str(), int(sql.size() + 1),
                              SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  statement s(raw);
  if (rc != SQLITE_OK) return fail(sqlite_error(rc));
  return s;
}

namespace {
enum : uint32_t { inserted = 0, duplicate = 1, rejected = 2 };
}

result<uint32_t> store::insert(const proto::Completion& c, uint64_t spool_seq, int64_t now_ns) {
  const auto* r = c.result();
  const auto* u = c.usage();
  if (!r || !u || proto::view(r->invocation_id()).empty()) return rejected;
  const auto id = proto::view(r->invocation_id());
  const auto attempt = int64_t(r->attempt());
  const auto tenant = proto::view(u->tenant());
  const auto function = proto::view(u->function());
  const proto::Timings timings = r->timings() ? *r->timings() : proto::Timings();

  sqlite3_stmt* a = insert_activation_.get();
  statement_use a_use(a);
  bind_text(a, 1, id);
  sqlite3_bind_int64(a, 2, attempt);
  bind_text(a, 3, tenant);
  bind_text(a, 4, function);
  sqlite3_bind_text(a, 5, proto::status_name(r->status()), -1, SQLITE_STATIC);
  const auto output = proto::bytes(r->output());
  sqlite3_bind_blob(a, 6, output.empty() ? "" : static_cast<const void*>(output.data()),
                    int(output.size()), SQLITE_STATIC);
  bind_text(a, 7, proto::view(r->content_type()));
  bind_text(a, 8, proto::view(r->error()));
  bind_text(a, 9, proto::view(r->node_id()));
  sqlite3_bind_int(a, 10, r->cold_start() ? 1 : 0);
  sqlite3_bind_int64(a, 11, timings.queued_ns());
  sqlite3_bind_int64(a, 12, timings.started_ns());
  sqlite3_bind_int64(a, 13, timings.finished_ns());
  if (int rc = sqlite3_step(a); rc != SQLITE_DONE) return fail(sqlite_error(rc));
  if (sqlite3_changes(db_.get()) == 0) return duplicate;

  sqlite3_stmt* s = insert_usage_.get();
  statement_use s_use(s);
  bind_text(s, 1, id);
  sqlite3_bind_int64(s, 2, attempt);
  bind_text(s, 3, tenant);
  bind_text(s, 4, function);
  bind_text(s, 5, proto::view(u->node_id()));
  sqlite3_bind_int64(s, 6, int64_t(u->node_seq() ? u->node_seq() : spool_seq));
  sqlite3_bind_int64(s, 7, u->wall_ns());
  sqlite3_bind_int64(s, 8, u->cpu_user_ns());
  sqlite3_bind_int64(s, 9, u->cpu_system_ns());
  sqlite3_bind_int64(s, 10, u->peak_memory_bytes());
  sqlite3_bind_int64(s, 11, u->memory_limit_bytes());
  sqlite3_bind_int64(s, 12, u->net_rx_bytes());
  sqlite3_bind_int64(s, 13, u->net_tx_bytes());
  sqlite3_bind_int(s, 14, u->cold_start() ? 1 : 0);
  sqlite3_bind_int64(s, 15, u->billed_duration_ms());
  sqlite3_bind_text(s, 16, proto::EnumNameAccountingSource(u->source()), -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 17, proto::trigger_name(u->trigger()), -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 18, now_ns);
  if (int rc = sqlite3_step(s); rc != SQLITE_DONE) return fail(sqlite_error(rc));
  return inserted;
}

result<ingest_outcome> store::ingest(const proto::CompletionBatch& batch) {
  ingest_outcome out;
  {
    statement_use use(begin_.get());
    if (int rc = sqlite3_step(begin_.get()); rc != SQLITE_DONE) return fail(sqlite_error(rc));
  }
  auto abort = [&](std::error_code ec) {
    statement_use use(rollback_.get());
    sqlite3_step(rollback_.get());
    return fail(ec);
  };
  const int64_t now = unix_now_ns();
  if (const auto* items = batch.completions()) {
    for (const auto* item : *items) {
      out.last_seq = std::max(out.last_seq, item->seq());
      const auto* c = item->completion() ? item->completion_nested_root() : nullptr;
      if (!c) {
        ++out.rejected;
        continue;
      }
      auto inserted_as = insert(*c, item->seq(), now);
      if (!inserted_as) return abort(inserted_as.error());
      if (*inserted_as == inserted) ++out.stored;
      else if (*inserted_as == duplicate) ++out.duplicates;
      else ++out.rejected;
    }
  }
  statement_use use(commit_.get());
  if (int rc = sqlite3_step(commit_.get()); rc != SQLITE_DONE) return abort(sqlite_error(rc));
  return out;
}

result<std::vector<usage_row>> store::usage(const usage_filter& filter) {
  sqlite3_stmt* s = usage_by_[size_t(filter.group_by)].get();
  statement_use use(s);
  bind_text(s, 1, filter.tenant);
  bind_text(s, 2, filter.function);
  sqlite3_bind_int64(s, 3, filter.since_ns);
  sqlite3_bind_int64(s, 4, filter.until_ns);
  std::vector<usage_row> rows;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    usage_row row;
    row.key = column_text(s, 0);
    row.invocations = uint64_t(sqlite3_column_int64(s, 1));
    row.errors = uint64_t(sqlite3_column_int64(s, 2));
    row.billed_ms = uint64_t(sqlite3_column_int64(s, 3));
    row.gb_seconds = sqlite3_column_double(s, 4);
    row.cpu_ns = uint64_t(sqlite3_column_int64(s, 5));
    row.peak_memory_bytes = sqlite3_column_int64(s, 6);
    row.cold_starts = uint64_t(sqlite3_column_int64(s, 7));
    rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(rc));
  return rows;
}

result<std::vector<stored_attempt>> store::activation(std::string_view invocation_id) {
  sqlite3_stmt* s = select_activation_.get();
  statement_use use(s);
  bind_text(s, 1, invocation_id);
  std::vector<stored_attempt> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    stored_attempt a;
    a.invocation_id = column_text(s, 0);
    a.attempt = uint32_t(sqlite3_column_int64(s, 1));
    a.tenant = column_text(s, 2);
    a.function = column_text(s, 3);
    a.status = status_from(column_text(s, 4));
    const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(s, 5));
    if (blob) a.output.assign(blob, blob + sqlite3_column_bytes(s, 5));
    a.content_type = column_text(s, 6);
    a.error = column_text(s, 7);
    a.node_id = column_text(s, 8);
    a.cold_start = sqlite3_column_int(s, 9) != 0;
    a.queued_ns = sqlite3_column_int64(s, 10);
    a.started_ns = sqlite3_column_int64(s, 11);
    a.finished_ns = sqlite3_column_int64(s, 12);
    a.has_usage = sqlite3_column_int(s, 13) != 0;
    if (a.has_usage) {
      a.node_seq = uint64_t(sqlite3_column_int64(s, 14));
      a.wall_ns = sqlite3_column_int64(s, 15);
      a.cpu_user_ns = sqlite3_column_int64(s, 16);
      a.cpu_system_ns = sqlite3_column_int64(s, 17);
      a.peak_memory_bytes = sqlite3_column_int64(s, 18);
      a.memory_limit_bytes = sqlite3_column_int64(s, 19);
      a.net_rx_bytes = sqlite3_column_int64(s, 20);
      a.net_tx_bytes = sqlite3_column_int64(s, 21);
      a.billed_ms = sqlite3_column_int64(s, 22);
      a.source = enum_from_name(column_text(s, 23),
                                std::array{proto::AccountingSource::rusage,
                                           proto::AccountingSource::cgroup,
                                           proto::AccountingSource::bpf},
                                proto::EnumNameAccountingSource, proto::AccountingSource::rusage);
      a.trigger = enum_from_name(
          column_text(s, 24),
          std::array{proto::Trigger::cli, proto::Trigger::http, proto::Trigger::cron,
                     proto::Trigger::event, proto::Trigger::file, proto::Trigger::function},
          proto::EnumNameTrigger, proto::Trigger::cli);
      a.recorded_ns = sqlite3_column_int64(s, 25);
    }
    out.push_back(std::move(a));
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(rc));
  return out;
}

}  // namespace fnmesh::collector
