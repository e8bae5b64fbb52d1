#include "broker/collector/store.h"

#include <algorithm>
#include <stdexcept>

#include "broker/collector/hours.h"
#include "common/clock.h"

namespace fnmesh::collector {
namespace {

constexpr const char* schema = R"sql(
CREATE TABLE activations (
  invocation_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  function TEXT NOT NULL,
  status TEXT NOT NULL,
  output BLOB NOT NULL,
  output_expired INTEGER NOT NULL,
  content_type TEXT NOT NULL,
  error TEXT NOT NULL,
  node_id TEXT NOT NULL,
  cold_start INTEGER NOT NULL,
  queued_ns INTEGER NOT NULL,
  started_ns INTEGER NOT NULL,
  finished_ns INTEGER NOT NULL,
  UNIQUE (invocation_id, attempt));
CREATE TABLE usage (
  id INTEGER PRIMARY KEY,
  tenant TEXT NOT NULL,
  function TEXT NOT NULL,
  node_id TEXT NOT NULL,
  status TEXT NOT NULL,
  finished_ns INTEGER NOT NULL,
  node_seq INTEGER NOT NULL,
  wall_ns INTEGER NOT NULL,
  cpu_user_ns INTEGER NOT NULL,
  cpu_system_ns INTEGER NOT NULL,
  peak_memory_bytes INTEGER NOT NULL,
  peak_memory_mb_ms INTEGER NOT NULL,
  memory_limit_bytes INTEGER NOT NULL,
  memory_mb INTEGER NOT NULL,
  net_rx_bytes INTEGER NOT NULL,
  net_tx_bytes INTEGER NOT NULL,
  cold_start INTEGER NOT NULL,
  billed_ms INTEGER NOT NULL,
  source TEXT NOT NULL,
  trigger TEXT NOT NULL,
  recorded_ns INTEGER NOT NULL,
  cost_lambda_pusd INTEGER NOT NULL,
  cost_usage_pusd INTEGER NOT NULL);
CREATE INDEX usage_finished ON usage (finished_ns);
CREATE INDEX usage_function ON usage (function, status, finished_ns);
CREATE INDEX usage_status ON usage (status, finished_ns);
CREATE INDEX usage_tenant ON usage (tenant, finished_ns);
CREATE TABLE usage_hourly (
  tenant TEXT NOT NULL,
  function TEXT NOT NULL,
  node_id TEXT NOT NULL,
  hour_ns INTEGER NOT NULL,
  invocations INTEGER NOT NULL,
  errors INTEGER NOT NULL,
  cold_starts INTEGER NOT NULL,
  billed_ms INTEGER NOT NULL,
  memory_mb_ms INTEGER NOT NULL,
  cpu_ns INTEGER NOT NULL,
  peak_memory_bytes INTEGER NOT NULL,
  peak_memory_mb_ms INTEGER NOT NULL,
  network_bytes INTEGER NOT NULL,
  cost_lambda_pusd INTEGER NOT NULL,
  cost_usage_pusd INTEGER NOT NULL,
  PRIMARY KEY (hour_ns, tenant, function, node_id)) WITHOUT ROWID;
PRAGMA user_version = 2;
)sql";

constexpr const char* insert_activation_sql =
    "INSERT OR IGNORE INTO activations (invocation_id, attempt, tenant, function, status, "
    "output, output_expired, content_type, error, node_id, cold_start, queued_ns, started_ns, "
    "finished_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?14, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

constexpr const char* insert_usage_sql =
    "INSERT INTO usage (id, tenant, function, node_id, status, finished_ns, node_seq, wall_ns, "
    "cpu_user_ns, cpu_system_ns, peak_memory_bytes, peak_memory_mb_ms, memory_limit_bytes, "
    "memory_mb, net_rx_bytes, net_tx_bytes, cold_start, billed_ms, source, trigger, "
    "recorded_ns, cost_lambda_pusd, cost_usage_pusd) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
    "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)";

constexpr const char* add_hour_sql =
    "INSERT INTO usage_hourly VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
    "?14, ?15) ON CONFLICT DO UPDATE SET invocations = invocations + excluded.invocations, "
    "errors = errors + excluded.errors, cold_starts = cold_starts + excluded.cold_starts, "
    "billed_ms = billed_ms + excluded.billed_ms, "
    "memory_mb_ms = memory_mb_ms + excluded.memory_mb_ms, cpu_ns = cpu_ns + excluded.cpu_ns, "
    "peak_memory_bytes = MAX(peak_memory_bytes, excluded.peak_memory_bytes), "
    "peak_memory_mb_ms = peak_memory_mb_ms + excluded.peak_memory_mb_ms, "
    "network_bytes = network_bytes + excluded.network_bytes, "
    "cost_lambda_pusd = cost_lambda_pusd + excluded.cost_lambda_pusd, "
    "cost_usage_pusd = cost_usage_pusd + excluded.cost_usage_pusd";

constexpr const char* expire_sql =
    "UPDATE activations SET output = x'', output_expired = 1 WHERE rowid IN "
    "(SELECT id FROM usage WHERE finished_ns >= ?1 AND finished_ns < ?2) AND output_expired = 0";

std::runtime_error open_failure(const std::filesystem::path& path, const std::string& what) {
  return std::runtime_error("database " + path.string() + ": " + what);
}

// Peak memory x wall time in MB-ms, rounded to the nearest.
int64_t peak_mb_ms(int64_t peak_bytes, int64_t wall_ns) {
  if (peak_bytes <= 0 || wall_ns <= 0) return 0;
  constexpr __int128 unit = __int128(1 << 20) * 1'000'000;
  return int64_t((__int128(peak_bytes) * wall_ns + unit / 2) / unit);
}

int64_t memory_mb(int64_t limit_bytes) {
  return limit_bytes <= 0 ? 0 : (limit_bytes + (1 << 20) - 1) >> 20;
}

// Refuses a file that is not a sound database of this schema; creates the schema in a
// new one.
void check_or_create(sqlite3* db, const std::filesystem::path& path) {
  auto tables = query_int(db, "SELECT count(*) FROM sqlite_schema");
  if (!tables) {
    const int rc = tables.error().value();
    if (rc == SQLITE_NOTADB)
      throw open_failure(path, "not an SQLite database (move it aside or pass another --db)");
    throw open_failure(path, "cannot read: " + tables.error().message());
  }
  if (*tables == 0) {
    if (auto made = exec(db, schema); !made)
      throw open_failure(path, "cannot create the tables: " + std::string(sqlite3_errmsg(db)));
    return;
  }
  auto check = prepare(db, "PRAGMA quick_check(1)");
  if (!check) throw open_failure(path, "integrity check failed to run: " + check.error().message());
  const int rc = sqlite3_step(check->get());
  std::string verdict = rc == SQLITE_ROW ? column_text(check->get(), 0) : sqlite3_errmsg(db);
  std::replace(verdict.begin(), verdict.end(), '\n', ' ');  // one line on stderr
  if (verdict != "ok")
    throw open_failure(path, "corrupt (" + verdict +
                                 "); refusing to use it: move it aside and restart (the nodes "
                                 "resend what they have not had acked), or restore a backup");
  auto version = query_int(db, "PRAGMA user_version");
  if (!version || *version != schema_version)
    throw open_failure(path, "schema version " + std::to_string(version.value_or(-1)) +
                                 ", this collector reads version " +
                                 std::to_string(schema_version));
}

}  // namespace

store store::open(const std::filesystem::path& path, const prices& price_list,
                  bool synchronous_full) {
  if (path.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) throw open_failure(path, "cannot create its folder: " + ec.message());
  }
  auto db = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db) throw open_failure(path, "cannot open: " + db.error().message());
  sqlite3* raw = db->get();
  check_or_create(raw, path);
  auto wal = prepare(raw, "PRAGMA journal_mode=WAL");
  if (!wal || sqlite3_step(wal->get()) != SQLITE_ROW || column_text(wal->get(), 0) != "wal")
    throw open_failure(path, "cannot switch to WAL mode: " + std::string(sqlite3_errmsg(raw)));
  if (!exec(raw, synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"))
    throw open_failure(path, sqlite3_errmsg(raw));

  store s;
  s.prices_ = price_list;
  s.db_ = std::move(*db);
  for (auto [target, sql] :
       {std::pair{&s.begin_, "BEGIN IMMEDIATE"}, {&s.commit_, "COMMIT"}, {&s.rollback_, "ROLLBACK"},
        {&s.insert_activation_, insert_activation_sql}, {&s.insert_usage_, insert_usage_sql},
        {&s.add_hour_, add_hour_sql}, {&s.expire_, expire_sql}}) {
    auto prepared = prepare(raw, sql);
    if (!prepared) throw open_failure(path, sqlite3_errmsg(raw));
    *target = std::move(*prepared);
  }
  return s;
}

std::string store::last_error() const { return db_ ? sqlite3_errmsg(db_.get()) : "not open"; }

result<void> store::step_done(sqlite3_stmt* s) {
  if (int rc = sqlite3_step(s); rc != SQLITE_DONE) return fail(sqlite_error(rc));
  return {};
}

result<store::inserted> store::insert(const proto::Completion& c, uint64_t spool_seq,
                                      int64_t now_ns) {
  const auto* r = c.result();
  const auto* u = c.usage();
  if (!r || !u || proto::view(r->invocation_id()).empty()) return inserted::rejected;
  const auto tenant = proto::view(u->tenant());
  const auto function = proto::view(u->function());
  const auto node = proto::view(u->node_id());
  const char* status = proto::status_name(r->status());
  const proto::Timings timings = r->timings() ? *r->timings() : proto::Timings();

  sqlite3_stmt* a = insert_activation_.get();
  statement_use a_use(a);
  bind_text(a, 1, proto::view(r->invocation_id()));
  sqlite3_bind_int64(a, 2, int64_t(r->attempt()));
  bind_text(a, 3, tenant);
  bind_text(a, 4, function);
  sqlite3_bind_text(a, 5, status, -1, SQLITE_STATIC);
  // A replay of an attempt older than the retention arrives already expired.
  const bool expired = timings.finished_ns() < expired_before_ns_;
  const auto output = expired ? std::span<const uint8_t>() : proto::bytes(r->output());
  sqlite3_bind_blob(a, 6, output.empty() ? "" : static_cast<const void*>(output.data()),
                    int(output.size()), SQLITE_STATIC);
  bind_text(a, 7, proto::view(r->content_type()));
  bind_text(a, 8, proto::view(r->error()));
  bind_text(a, 9, proto::view(r->node_id()));
  sqlite3_bind_int(a, 10, r->cold_start() ? 1 : 0);
  sqlite3_bind_int64(a, 11, timings.queued_ns());
  sqlite3_bind_int64(a, 12, timings.started_ns());
  sqlite3_bind_int64(a, 13, timings.finished_ns());
  sqlite3_bind_int(a, 14, expired ? 1 : 0);
  if (auto done = step_done(a); !done) return fail(done.error());
  if (sqlite3_changes(db_.get()) == 0) return inserted::duplicate;

  const metered m{.billed_ms = u->billed_duration_ms(),
                  .memory_limit_bytes = u->memory_limit_bytes(),
                  .cpu_ns = u->cpu_user_ns() + u->cpu_system_ns(),
                  .peak_memory_bytes = u->peak_memory_bytes(),
                  .wall_ns = u->wall_ns(),
                  .network_bytes = u->net_rx_bytes() + u->net_tx_bytes()};
  const costs cost = prices_.of(m);
  const int64_t mb = memory_mb(m.memory_limit_bytes);
  const int64_t peak = peak_mb_ms(m.peak_memory_bytes, m.wall_ns);
  const bool error = r->status() != proto::Status::ok;

  sqlite3_stmt* s = insert_usage_.get();
  statement_use s_use(s);
  sqlite3_bind_int64(s, 1, sqlite3_last_insert_rowid(db_.get()));
  bind_text(s, 2, tenant);
  bind_text(s, 3, function);
  bind_text(s, 4, node);
  sqlite3_bind_text(s, 5, status, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 6, timings.finished_ns());
  sqlite3_bind_int64(s, 7, int64_t(u->node_seq() ? u->node_seq() : spool_seq));
  sqlite3_bind_int64(s, 8, u->wall_ns());
  sqlite3_bind_int64(s, 9, u->cpu_user_ns());
  sqlite3_bind_int64(s, 10, u->cpu_system_ns());
  sqlite3_bind_int64(s, 11, u->peak_memory_bytes());
  sqlite3_bind_int64(s, 12, peak);
  sqlite3_bind_int64(s, 13, u->memory_limit_bytes());
  sqlite3_bind_int64(s, 14, mb);
  sqlite3_bind_int64(s, 15, u->net_rx_bytes());
  sqlite3_bind_int64(s, 16, u->net_tx_bytes());
  sqlite3_bind_int(s, 17, u->cold_start() ? 1 : 0);
  sqlite3_bind_int64(s, 18, m.billed_ms);
  sqlite3_bind_text(s, 19, proto::EnumNameAccountingSource(u->source()), -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 20, proto::trigger_name(u->trigger()), -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 21, now_ns);
  sqlite3_bind_int64(s, 22, cost.lambda_pusd);
  sqlite3_bind_int64(s, 23, cost.usage_pusd);
  if (auto done = step_done(s); !done) return fail(done.error());

  auto& h = hours_[{std::string(tenant), std::string(function), std::string(node),
                    floor_hour(timings.finished_ns())}];
  h.invocations += 1;
  h.errors += error ? 1 : 0;
  h.cold_starts += u->cold_start() ? 1 : 0;
  h.billed_ms += m.billed_ms;
  h.memory_mb_ms += mb * m.billed_ms;
  h.cpu_ns += m.cpu_ns;
  h.peak_memory_bytes = std::max(h.peak_memory_bytes, m.peak_memory_bytes);
  h.peak_memory_mb_ms += peak;
  h.network_bytes += m.network_bytes;
  h.cost_lambda_pusd += cost.lambda_pusd;
  h.cost_usage_pusd += cost.usage_pusd;
  return inserted::stored;
}

result<void> store::add_hours() {
  sqlite3_stmt* s = add_hour_.get();
  for (const auto& [k, h] : hours_) {
    statement_use use(s);
    bind_text(s, 1, k.tenant);
    bind_text(s, 2, k.function);
    bind_text(s, 3, k.node);
    sqlite3_bind_int64(s, 4, k.hour_ns);
    int i = 5;
    for (int64_t v : {h.invocations, h.errors, h.cold_starts, h.billed_ms, h.memory_mb_ms,
                      h.cpu_ns, h.peak_memory_bytes, h.peak_memory_mb_ms, h.network_bytes,
                      h.cost_lambda_pusd, h.cost_usage_pusd})
      sqlite3_bind_int64(s, i++, v);
    if (auto done = step_done(s); !done) return done;
  }
  return {};
}

result<ingest_outcome> store::ingest(const proto::CompletionBatch& batch) {
  ingest_outcome out;
  hours_.clear();
  {
    statement_use use(begin_.get());
    if (auto begun = step_done(begin_.get()); !begun) return fail(begun.error());
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
      auto got = insert(*c, item->seq(), now);
      if (!got) return abort(got.error());
      if (*got == inserted::stored) ++out.stored;
      else if (*got == inserted::duplicate) ++out.duplicates;
      else ++out.rejected;
    }
  }
  if (auto added = add_hours(); !added) return abort(added.error());
  statement_use use(commit_.get());
  if (auto committed = step_done(commit_.get()); !committed) return abort(committed.error());
  return out;
}

result<uint64_t> store::expire_outputs(int64_t finished_before_ns) {
  if (finished_before_ns <= expired_before_ns_) return 0;
  sqlite3_stmt* s = expire_.get();
  statement_use use(s);
  sqlite3_bind_int64(s, 1, expired_before_ns_);
  sqlite3_bind_int64(s, 2, finished_before_ns);
  if (auto done = step_done(s); !done) return fail(done.error());
  expired_before_ns_ = finished_before_ns;
  return uint64_t(sqlite3_changes(db_.get()));
}

}  // namespace fnmesh::collector
