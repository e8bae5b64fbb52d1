#include "trigger-adapters/cron/schedule.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <vector>

namespace fnmesh::cron {
namespace {

using std::chrono::days;
using std::chrono::sys_days;
using std::chrono::sys_seconds;

struct field_kind {
  std::string_view name;
  int lo, hi;
  std::array<std::string_view, 12> names{};  // names[i] stands for names_base + i
  int names_base = 0;
};

constexpr std::array<field_kind, 5> kinds{{
    {"minute", 0, 59},
    {"hour", 0, 23},
    {"day-of-month", 1, 31},
    {"month", 1, 12,
     {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}, 1},
    {"day-of-week", 0, 7, {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}, 0},
}};

constexpr std::array<std::pair<std::string_view, std::string_view>, 7> macros{{
    {"@yearly", "0 0 1 1 *"},
    {"@annually", "0 0 1 1 *"},
    {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},
    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
}};

// A valid day-of-month/month/day-of-week combination recurs within 28 years (the
// calendar's weekday cycle between century years): searching longer is pointless.
constexpr int search_days = 28 * 366;

std::vector<std::string_view> split(std::string_view s, std::string_view separators) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find_first_of(separators, pos);
    if (end == std::string_view::npos) end = s.size();
    out.push_back(s.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  for (auto w : split(s, " \t"))
    if (!w.empty()) out.push_back(w);
  return out;
}

std::expected<int64_t, std::string> number(std::string_view s) {
  int64_t v = 0;
  if (s.empty()) return std::unexpected(std::string("a number is missing"));
  if (s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::unexpected("'" + std::string(s) + "' is not a number");
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// One end of a range: a number in [lo, hi] or, for months and weekdays, a name.
std::expected<int, std::string> value_of(const field_kind& k, std::string_view s) {
  if (!s.empty() && std::isalpha(static_cast<unsigned char>(s[0]))) {
    std::string lower(s);
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    for (size_t i = 0; i < k.names.size(); ++i)
      if (k.names[i] == lower) return k.names_base + int(i);
    if (k.names[0].empty()) return std::unexpected("'" + std::string(s) + "' is not a number");
    const auto last = std::find(k.names.begin(), k.names.end(), std::string_view()) - 1;
    return std::unexpected("'" + std::string(s) + "' is neither a number nor a name (" +
                           std::string(k.names[0]) + "-" + std::string(*last) + ")");
  }
  auto v = number(s);
  if (!v) return std::unexpected(v.error());
  if (*v < k.lo || *v > k.hi)
    return std::unexpected(std::string(s) + " is out of range " + std::to_string(k.lo) + "-" +
                           std::to_string(k.hi));
  return int(*v);
}

// A comma-separated list of *, */n, a, a-b and a-b/n: the bit set it selects.
std::expected<uint64_t, std::string> parse_field(const field_kind& k, std::string_view text) {
  uint64_t bits = 0;
  for (std::string_view item : split(text, ",")) {
    if (item.empty()) return std::unexpected("empty list item in '" + std::string(text) + "'");
    std::string_view range = item;
    int step = 1;
    if (size_t slash = item.find('/'); slash != std::string_view::npos) {
      range = item.substr(0, slash);
      auto n = number(item.substr(slash + 1));
      if (!n) return std::unexpected("step " + n.error());
      if (*n < 1) return std::unexpected("step " + std::to_string(*n) + " must be 1 or more");
      if (range != "*" && range.find('-') == std::string_view::npos)
        return std::unexpected("a step goes after * or a range (*/n, a-b/n), got " +
                               std::string(item));
      step = int(std::min<int64_t>(*n, k.hi + 1));
    }
    int lo = k.lo, hi = k.hi;
    if (range != "*") {
      const size_t dash = range.find('-');
      auto a = value_of(k, range.substr(0, dash));
      if (!a) return std::unexpected(a.error());
      lo = hi = *a;
      if (dash != std::string_view::npos) {
        auto b = value_of(k, range.substr(dash + 1));
        if (!b) return std::unexpected(b.error());
        if (*b < *a) return std::unexpected("range " + std::string(range) + " goes backwards");
        hi = *b;
      }
    }
    for (int v = lo; v <= hi; v += step) bits |= uint64_t(1) << v;
  }
  return bits;
}

std::expected<std::chrono::seconds, std::string> parse_every(
    const std::vector<std::string_view>& w) {
  if (w.size() < 2) return std::unexpected("@every: missing duration (e.g. @every 5m)");
  if (w.size() > 2)
    return std::unexpected("@every: one duration without spaces (e.g. @every 1h30m)");
  const std::string_view d = w[1];
  const std::string bad = "@every: '" + std::string(d) +
                          "' is not a duration of whole h, m and s (e.g. 30s, 5m, 1h30m)";
  int64_t total = 0;
  size_t pos = 0;
  while (pos < d.size()) {
    size_t unit = pos;
    while (unit < d.size() && d[unit] >= '0' && d[unit] <= '9') ++unit;
    auto n = number(d.substr(pos, unit - pos));
    const char u = unit < d.size() ? d[unit] : 0;
    const int64_t seconds = u == 'h' ? 3600 : u == 'm' ? 60 : u == 's' ? 1 : 0;
    if (!n || seconds == 0) return std::unexpected(bad);
    total += *n * seconds;
    pos = unit + 1;
  }
  if (total < 1)
    return std::unexpected("@every: " + std::string(d) + " is below the minimum of 1s");
  return std::chrono::seconds(total);
}

}  // namespace

std::expected<schedule, std::string> schedule::parse(std::string_view expression) {
  auto w = words(expression);
  if (w.size() >= 1 && w[0].starts_with('@')) {
    if (w[0] == "@every") {
      auto every = parse_every(w);
      if (!every) return std::unexpected(every.error());
      schedule s;
      s.every_ = *every;
      return s;
    }
    if (w[0] == "@reboot")
      return std::unexpected(
          "@reboot: not supported (cron ticks on a clock; the adapter has no boot)");
    for (const auto& [name, fields] : macros)
      if (w[0] == name) {
        if (w.size() > 1) return std::unexpected(std::string(name) + ": takes nothing after it");
        return parse(fields);
      }
    return std::unexpected(
        std::string(w[0]) +
        ": unknown macro (@yearly, @annually, @monthly, @weekly, @daily, @midnight, "
        "@hourly or @every <duration>)");
  }
  if (w.size() != 5)
    return std::unexpected(
        "must be a cron expression of 5 fields (minute hour day-of-month month "
        "day-of-week), a macro such as @daily or @every <duration>; got " +
        std::to_string(w.size()) + " field" + (w.size() == 1 ? "" : "s"));
  schedule s;
  uint64_t* targets[] = {&s.minutes_, &s.hours_, &s.days_, &s.months_, &s.weekdays_};
  for (size_t i = 0; i < kinds.size(); ++i) {
    auto bits = parse_field(kinds[i], w[i]);
    if (!bits) return std::unexpected(std::string(kinds[i].name) + ": " + bits.error());
    *targets[i] = *bits;
  }
  if (s.weekdays_ & (1u << 7)) s.weekdays_ = (s.weekdays_ | 1u) & 0x7f;  // 7 is Sunday too
  s.any_day_ = w[2].starts_with('*');
  s.any_weekday_ = w[4].starts_with('*');
  if (!s.search(sys_days(std::chrono::year(2000) / 1 / 1)))
    return std::unexpected("day-of-month: " + std::string(w[2]) + " never falls in month " +
                           std::string(w[3]) + ", so the schedule would never run");
  return s;
}

sys_seconds schedule::next_after(sys_seconds t) const {
  if (every_.count() > 0) {
    const auto since_epoch = t.time_since_epoch();
    auto periods = since_epoch / every_;
    if (since_epoch.count() < 0 && since_epoch % every_ != std::chrono::seconds(0)) --periods;
    return sys_seconds((periods + 1) * every_);
  }
  return *search(t);  // parse() made sure there is one
}

// Vixie cron's rule: when both day fields are restricted (neither begins with '*'), a day
// matching either runs; otherwise a day must match both.
bool schedule::day_matches(sys_days day) const {
  const std::chrono::year_month_day ymd(day);
  const bool dom = days_ >> unsigned(ymd.day()) & 1;
  const bool dow = weekdays_ >> std::chrono::weekday(day).c_encoding() & 1;
  return any_day_ || any_weekday_ ? dom && dow : dom || dow;
}

std::optional<sys_seconds> schedule::search(sys_seconds t) const {
  const auto first = std::chrono::floor<std::chrono::minutes>(t) + std::chrono::minutes(1);
  sys_days day = std::chrono::floor<days>(first);
  int from = int((first - day) / std::chrono::minutes(1));  // minute of the day to start at
  for (int i = 0; i < search_days; ++i, ++day, from = 0) {
    if (!(months_ >> unsigned(std::chrono::year_month_day(day).month()) & 1) || !day_matches(day))
      continue;
    for (int m = from; m < 24 * 60; ++m)
      if ((hours_ >> (m / 60) & 1) && (minutes_ >> (m % 60) & 1))
        return sys_seconds(day) + std::chrono::minutes(m);
  }
  return std::nullopt;
}

}  // namespace fnmesh::cron
