#pragma once
// schedule: one cron expression of a function spec, parsed — standard 5 fields (minute
// hour day-of-month month day-of-week), a macro (@daily...) or `@every <duration>` — and
// the times it ticks, in UTC. The same parser checks manifests at deploy (tools/manifest.cc)
// and drives the adapter, so what deploys is what runs. Immutable: any thread.
#include <chrono>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

namespace fnmesh::cron {

class schedule {
 public:
  // A bad expression gives "<field>: <why>", e.g. "hour: 24 is out of range 0-23".
  static std::expected<schedule, std::string> parse(std::string_view expression);

  // The first tick strictly after `t`. 5-field and macro ticks are whole minutes; `@every d`
  // ticks are the multiples of d since the Unix epoch — so every adapter instance computes
  // the same ticks whenever it started.
  std::chrono::sys_seconds next_after(std::chrono::sys_seconds t) const;

 private:
  schedule() = default;
  std::optional<std::chrono::sys_seconds> search(std::chrono::sys_seconds t) const;
  bool day_matches(std::chrono::sys_days day) const;

  std::chrono::seconds every_{0};  // > 0: `@every`; the fields below are then unused
  uint64_t minutes_ = 0;           // bit n: minute n
  uint64_t hours_ = 0;
  uint64_t days_ = 0;              // bit 1-31
  uint64_t months_ = 0;            // bit 1-12
  uint64_t weekdays_ = 0;          // bit 0-6, 0 = Sunday
  bool any_day_ = false;           // day-of-month begins with '*'
  bool any_weekday_ = false;       // day-of-week begins with '*'
};

}  // namespace fnmesh::cron
