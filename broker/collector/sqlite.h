#pragma once
// sqlite: the few SQLite helpers the collector's store and reader share: owning handles,
// the error category, and binding/reading text. No state of its own.
#include <sqlite3.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "common/result.h"

namespace fnmesh::collector {

// Errors from SQLite, with its extended result codes.
const std::error_category& sqlite_category() noexcept;
inline std::error_code sqlite_error(int rc) { return {rc, sqlite_category()}; }

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close(db); }
};
struct statement_finalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;
using statement = std::unique_ptr<sqlite3_stmt, statement_finalizer>;

// Opens `path` with `flags` (SQLITE_OPEN_*), extended result codes on, a 5 s busy timeout.
result<db_ptr> open_db(const std::filesystem::path& path, int flags);
result<void> exec(sqlite3* db, const char* sql);
result<statement> prepare(sqlite3* db, const std::string& sql);
// Runs a statement that returns one integer (e.g. a PRAGMA); fails when it returns none.
result<int64_t> query_int(sqlite3* db, const char* sql);

// Resets a statement and clears its bindings when a call is done with it, whatever path
// it leaves by.
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

// Binds text that outlives the statement's use (SQLITE_STATIC).
inline void bind_text(sqlite3_stmt* s, int i, std::string_view text) {
  sqlite3_bind_text(s, i, text.data() ? text.data() : "", int(text.size()), SQLITE_STATIC);
}
std::string column_text(sqlite3_stmt* s, int i);

}  // namespace fnmesh::collector
