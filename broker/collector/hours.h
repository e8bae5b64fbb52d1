#pragma once
// hours: the whole UTC hours of unix-ns times, as usage_hourly keys them. They saturate at
// the ends of int64, so a time a user may type near them cannot wrap around.
#include <cstdint>
#include <limits>

namespace fnmesh::collector {

inline constexpr int64_t ns_per_hour = 3'600'000'000'000;

// The start of the hour holding `ns`.
inline int64_t floor_hour(int64_t ns) noexcept {
  const int64_t r = ns % ns_per_hour;  // in (-1 h, 1 h)
  const __int128 start = __int128(ns) - (r < 0 ? r + ns_per_hour : r);
  return start < std::numeric_limits<int64_t>::min() ? std::numeric_limits<int64_t>::min()
                                                      : int64_t(start);
}

// The first hour start at or after `ns`.
inline int64_t ceil_hour(int64_t ns) noexcept {
  const int64_t r = ns % ns_per_hour;
  const __int128 start = __int128(ns) + (r > 0 ? ns_per_hour - r : -r);
  return start > std::numeric_limits<int64_t>::max() ? std::numeric_limits<int64_t>::max()
                                                      : int64_t(start);
}

}  // namespace fnmesh::collector
