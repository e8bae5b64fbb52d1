#pragma once
// Clocks: wall time as unix nanoseconds (what messages carry) and a monotonic clock for
// measuring durations.
#include <cstdint>
#include <ctime>

namespace fnmesh {

inline int64_t clock_ns(clockid_t id) noexcept {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
inline int64_t unix_now_ns() noexcept { return clock_ns(CLOCK_REALTIME); }
inline int64_t mono_now_ns() noexcept { return clock_ns(CLOCK_MONOTONIC); }

}  // namespace fnmesh
