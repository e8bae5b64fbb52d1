#include "broker/collector/sqlite.h"

namespace fnmesh::collector {
namespace {

class sqlite_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sqlite"; }
  std::string message(int v) const override { return sqlite3_errstr(v); }
};

}  // namespace

const std::error_category& sqlite_category() noexcept {
  static const sqlite_error_category instance;
  return instance;
}

result<db_ptr> open_db(const std::filesystem::path& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  db_ptr db(raw);
  if (rc != SQLITE_OK) return fail(sqlite_error(rc));
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, 5000);
  return db;
}

result<void> exec(sqlite3* db, const char* sql) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return fail(sqlite_error(rc));
  return {};
}

result<statement> prepare(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.c_str(), int(sql.size() + 1), SQLITE_PREPARE_PERSISTENT,
                              &raw, nullptr);
  statement s(raw);
  if (rc != SQLITE_OK) return fail(sqlite_error(rc));
  return s;
}

result<int64_t> query_int(sqlite3* db, const char* sql) {
  auto s = prepare(db, sql);
  if (!s) return fail(s.error());
  int rc = sqlite3_step(s->get());
  if (rc == SQLITE_ROW) return sqlite3_column_int64(s->get(), 0);
  return fail(sqlite_error(rc == SQLITE_DONE ? SQLITE_EMPTY : rc));
}

std::string column_text(sqlite3_stmt* s, int i) {
  auto* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p), size_t(sqlite3_column_bytes(s, i)))
           : std::string();
}

}  // namespace fnmesh::collector
