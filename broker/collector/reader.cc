#include "broker/collector/reader.h"

#include <array>
#include <initializer_list>
#include <stdexcept>

#include "broker/collector/hours.h"

namespace fnmesh::collector {
namespace {

// A grouping's key; hours and days are of `time_column` (unix ns).
std::string group_key(grouping g, const std::string& time_column) {
  const auto utc = [&](const char* format) {
    return "strftime('" + std::string(format) + "', " + time_column + " / 1000000000, 'unixepoch')";
  };
  switch (g) {
    case grouping::function: return "function";
    case grouping::tenant: return "tenant";
    case grouping::node: return "node_id";
    case grouping::hour: return utc("%Y-%m-%dT%H:00Z");
    case grouping::day: return utc("%Y-%m-%d");
  }
  return "function";
}

// ?1 tenant, ?2 function, ?3 node, ?4 since, ?5 until, ?6 first whole hour, ?7 end of the
// last whole hour: whole hours from usage_hourly, the edges from usage.
std::string usage_sql(grouping g) {
  const std::string filter =
      " AND (?1 = '' OR tenant = ?1) AND (?2 = '' OR function = ?2) AND (?3 = '' OR node_id = ?3)";
  const std::string records =
      "SELECT " + group_key(g, "finished_ns") +
      " AS k, 1 AS n, status != 'ok' AS e, cold_start AS c, billed_ms AS b, "
      "memory_mb * billed_ms AS mm, cpu_user_ns + cpu_system_ns AS cpu, peak_memory_bytes AS pk, "
      "peak_memory_mb_ms AS pkmm, net_rx_bytes + net_tx_bytes AS net, cost_lambda_pusd AS cl, "
      "cost_usage_pusd AS cu FROM usage WHERE ";
  return "SELECT k, SUM(n), SUM(e), SUM(c), SUM(b), SUM(mm), SUM(cpu), MAX(pk), SUM(pkmm), "
         "SUM(net), SUM(cl), SUM(cu) FROM (SELECT " +
         group_key(g, "hour_ns") +
         " AS k, invocations AS n, errors AS e, cold_starts AS c, billed_ms AS b, "
         "memory_mb_ms AS mm, cpu_ns AS cpu, peak_memory_bytes AS pk, peak_memory_mb_ms AS pkmm, "
         "network_bytes AS net, cost_lambda_pusd AS cl, cost_usage_pusd AS cu FROM usage_hourly "
         "WHERE hour_ns >= ?6 AND hour_ns < ?7" +
         filter + " UNION ALL " + records + "finished_ns >= ?4 AND finished_ns < ?6" + filter +
         " UNION ALL " + records + "finished_ns >= ?7 AND finished_ns < ?5" + filter +
         ") GROUP BY k ORDER BY k";
}

constexpr const char* attempt_columns =
    "SELECT a.invocation_id, a.attempt, a.tenant, a.function, a.status, length(a.output), "
    "a.output_expired, a.content_type, a.error, a.node_id, a.cold_start, a.queued_ns, "
    "a.started_ns, a.finished_ns, u.node_seq, u.wall_ns, u.cpu_user_ns, u.cpu_system_ns, "
    "u.peak_memory_bytes, u.memory_limit_bytes, u.memory_mb, u.net_rx_bytes, u.net_tx_bytes, "
    "u.billed_ms, u.source, u.trigger, u.recorded_ns, u.cost_lambda_pusd, u.cost_usage_pusd, ";

// The list with only the filters in `given` (bits: 1 tenant ?1, 2 function ?2, 4 status
// ?3): a filter written as (?2 = '' OR function = ?2) would keep SQLite from the indexes
// on function and status, and a rare status would read every record.
std::string list_sql(unsigned given) {
  std::string sql = std::string(attempt_columns) +
                    "NULL FROM usage u JOIN activations a ON a.rowid = u.id "
                    "WHERE u.finished_ns >= ?4 AND u.finished_ns < ?5";
  if (given & 1) sql += " AND u.tenant = ?1";
  if (given & 2) sql += " AND u.function = ?2";
  if (given & 4) sql += " AND u.status = ?3";
  return sql + " ORDER BY u.finished_ns DESC LIMIT ?6";
}

const std::string by_id_sql = std::string(attempt_columns) +
                              "a.output FROM activations a JOIN usage u ON u.id = a.rowid "
                              "WHERE a.invocation_id = ?1 ORDER BY a.attempt";

template <class E, size_t N>
E enum_from_name(const std::string& name, const std::array<E, N>& values,
                 const char* (*name_of)(E), E fallback) {
  for (E v : values)
    if (name == name_of(v)) return v;
  return fallback;
}

}  // namespace

std::optional<grouping> parse_grouping(std::string_view name) noexcept {
  if (name == "function") return grouping::function;
  if (name == "tenant") return grouping::tenant;
  if (name == "node") return grouping::node;
  if (name == "hour") return grouping::hour;
  if (name == "day") return grouping::day;
  return std::nullopt;
}

reader reader::open(const std::filesystem::path& path) {
  auto db = open_db(path, SQLITE_OPEN_READONLY);
  if (!db) throw std::runtime_error("database " + path.string() + ": " + db.error().message());
  // 64 MiB of page cache rather than 2: the hours and indexes a query reads stay in it.
  if (!exec(db->get(), "PRAGMA cache_size=-65536"))
    throw std::runtime_error("database " + path.string() + ": " + sqlite3_errmsg(db->get()));
  reader r;
  r.db_ = std::move(*db);
  auto must = [&](const std::string& sql) {
    auto s = prepare(r.db_.get(), sql);
    if (!s)
      throw std::runtime_error("database " + path.string() + ": " + sqlite3_errmsg(r.db_.get()));
    return std::move(*s);
  };
  for (grouping g : {grouping::function, grouping::tenant, grouping::node, grouping::hour,
                     grouping::day})
    r.usage_by_.push_back(must(usage_sql(g)));
  for (unsigned given = 0; given < r.lists_.size(); ++given) r.lists_[given] = must(list_sql(given));
  r.by_id_ = must(by_id_sql);
  return r;
}

result<std::vector<usage_row>> reader::usage(const usage_filter& f) {
  int64_t whole_from = ceil_hour(f.since_ns);
  int64_t whole_to = f.until_ns == no_time_bound ? no_time_bound : floor_hour(f.until_ns);
  if (whole_to <= whole_from) whole_from = whole_to = f.until_ns;  // no whole hour inside
  sqlite3_stmt* s = usage_by_[size_t(f.group_by)].get();
  statement_use use(s);
  bind_text(s, 1, f.tenant);
  bind_text(s, 2, f.function);
  bind_text(s, 3, f.node);
  sqlite3_bind_int64(s, 4, f.since_ns);
  sqlite3_bind_int64(s, 5, f.until_ns);
  sqlite3_bind_int64(s, 6, whole_from);
  sqlite3_bind_int64(s, 7, whole_to);
  std::vector<usage_row> rows;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    usage_row row;
    row.key = column_text(s, 0);
    int i = 1;
    for (int64_t* field : {&row.invocations, &row.errors, &row.cold_starts, &row.billed_ms,
                           &row.memory_mb_ms, &row.cpu_ns, &row.peak_memory_bytes,
                           &row.peak_memory_mb_ms, &row.network_bytes, &row.cost_lambda_pusd,
                           &row.cost_usage_pusd})
      *field = sqlite3_column_int64(s, i++);
    rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(rc));
  return rows;
}

result<std::vector<stored_attempt>> reader::activations(const activation_filter& f) {
  const unsigned given = (f.tenant.empty() ? 0 : 1) | (f.function.empty() ? 0 : 2) |
                         (f.status.empty() ? 0 : 4);
  sqlite3_stmt* s = lists_[given].get();
  statement_use use(s);
  bind_text(s, 1, f.tenant);
  bind_text(s, 2, f.function);
  bind_text(s, 3, f.status);
  sqlite3_bind_int64(s, 4, f.since_ns);
  sqlite3_bind_int64(s, 5, f.until_ns);
  sqlite3_bind_int(s, 6, f.limit);
  return attempts(s, false);
}

result<std::vector<stored_attempt>> reader::activation(std::string_view invocation_id) {
  sqlite3_stmt* s = by_id_.get();
  statement_use use(s);
  bind_text(s, 1, invocation_id);
  return attempts(s, true);
}

result<std::vector<stored_attempt>> reader::attempts(sqlite3_stmt* s, bool with_output) {
  static constexpr std::array statuses = {
      proto::Status::ok,        proto::Status::error,         proto::Status::timeout,
      proto::Status::out_of_memory, proto::Status::cpu_limit, proto::Status::crashed,
      proto::Status::rejected,  proto::Status::no_such_function};
  static constexpr std::array sources = {proto::AccountingSource::rusage,
                                         proto::AccountingSource::cgroup,
                                         proto::AccountingSource::bpf};
  static constexpr std::array triggers = {proto::Trigger::cli,   proto::Trigger::http,
                                          proto::Trigger::cron,  proto::Trigger::event,
                                          proto::Trigger::file,  proto::Trigger::function};
  std::vector<stored_attempt> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    stored_attempt a;
    a.invocation_id = column_text(s, 0);
    a.attempt = uint32_t(sqlite3_column_int64(s, 1));
    a.tenant = column_text(s, 2);
    a.function = column_text(s, 3);
    a.status = enum_from_name(column_text(s, 4), statuses, proto::EnumNameStatus,
                              proto::Status::error);
    a.output_bytes = sqlite3_column_int64(s, 5);
    a.output_expired = sqlite3_column_int(s, 6) != 0;
    a.content_type = column_text(s, 7);
    a.error = column_text(s, 8);
    a.node_id = column_text(s, 9);
    a.cold_start = sqlite3_column_int(s, 10) != 0;
    a.queued_ns = sqlite3_column_int64(s, 11);
    a.started_ns = sqlite3_column_int64(s, 12);
    a.finished_ns = sqlite3_column_int64(s, 13);
    a.node_seq = uint64_t(sqlite3_column_int64(s, 14));
    a.wall_ns = sqlite3_column_int64(s, 15);
    a.cpu_user_ns = sqlite3_column_int64(s, 16);
    a.cpu_system_ns = sqlite3_column_int64(s, 17);
    a.peak_memory_bytes = sqlite3_column_int64(s, 18);
    a.memory_limit_bytes = sqlite3_column_int64(s, 19);
    a.memory_mb = sqlite3_column_int64(s, 20);
    a.net_rx_bytes = sqlite3_column_int64(s, 21);
    a.net_tx_bytes = sqlite3_column_int64(s, 22);
    a.billed_ms = sqlite3_column_int64(s, 23);
    a.source = enum_from_name(column_text(s, 24), sources, proto::EnumNameAccountingSource,
                              proto::AccountingSource::rusage);
    a.trigger = enum_from_name(column_text(s, 25), triggers, proto::EnumNameTrigger,
                               proto::Trigger::cli);
    a.recorded_ns = sqlite3_column_int64(s, 26);
    a.cost_lambda_pusd = sqlite3_column_int64(s, 27);
    a.cost_usage_pusd = sqlite3_column_int64(s, 28);
    if (with_output) {
      const auto* blob = static_cast<const uint8_t*>(sqlite3_column_blob(s, 29));
      if (blob) a.output.assign(blob, blob + sqlite3_column_bytes(s, 29));
    }
    out.push_back(std::move(a));
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(rc));
  return out;
}

}  // namespace fnmesh::collector
