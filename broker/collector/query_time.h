#pragma once
// query_time: the times a billing query accepts and prints. Pure functions.
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace fnmesh::collector {

// A query bound as unix ns:
//   ISO 8601: "2026-11-27" (midnight UTC), "2026-11-27T10:00Z", "2026-11-27T10:00:00Z",
//             "2026-11-27T10:00:00.250+01:00", "2026-11-27 10:00:00" (UTC); a missing zone
//             means UTC;
//   relative: "90s", "30m", "1h", "7d", "2w" (that long before `now_ns`);
//   "now".
// Otherwise the error text, e.g. "'yesterday' is not a time (ISO 8601 like
// 2026-11-27T10:00Z, or relative like 1h, 7d)", or "'2026-02-30' is not a date".
std::expected<int64_t, std::string> parse_query_time(std::string_view text, int64_t now_ns);

// ISO 8601 UTC with milliseconds: "2026-11-27T10:00:00.250Z".
std::string format_time(int64_t unix_ns);

}  // namespace fnmesh::collector
