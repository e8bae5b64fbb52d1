#include "broker/collector/query_time.h"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <limits>

namespace fnmesh::collector {
namespace {

using namespace std::chrono;

constexpr int64_t ns_per_s = 1'000'000'000;

std::unexpected<std::string> not_a_time(std::string_view text) {
  return std::unexpected("'" + std::string(text) +
                         "' is not a time (ISO 8601 like 2026-11-27T10:00Z, or relative like 1h, 7d)");
}

std::unexpected<std::string> out_of_range(std::string_view text) {
  return std::unexpected("'" + std::string(text) + "' is out of range");
}

// Reads the text left to right; a failed read leaves the cursor where it was.
struct cursor {
  std::string_view rest;

  bool skip(char c) {
    if (rest.empty() || rest[0] != c) return false;
    rest.remove_prefix(1);
    return true;
  }
  // Exactly `width` digits.
  bool number(size_t width, int& out) {
    if (rest.size() < width) return false;
    int v = 0;
    for (size_t i = 0; i < width; ++i) {
      if (rest[i] < '0' || rest[i] > '9') return false;
      v = v * 10 + (rest[i] - '0');
    }
    rest.remove_prefix(width);
    out = v;
    return true;
  }
};

std::expected<int64_t, std::string> relative(std::string_view text, int64_t now_ns) {
  int64_t unit_ns = 0;
  switch (text.back()) {
    case 's': unit_ns = ns_per_s; break;
    case 'm': unit_ns = 60 * ns_per_s; break;
    case 'h': unit_ns = 3600 * ns_per_s; break;
    case 'd': unit_ns = 86400 * ns_per_s; break;
    case 'w': unit_ns = 7 * 86400 * ns_per_s; break;
    default: return not_a_time(text);
  }
  const std::string_view count = text.substr(0, text.size() - 1);
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
  if (count.empty() || count[0] == '-' || end != count.data() + count.size() ||
      (ec == std::errc() && n == 0))
    return not_a_time(text);
  int64_t back = 0, at = 0;
  if (ec != std::errc() || __builtin_mul_overflow(n, unit_ns, &back) ||
      __builtin_sub_overflow(now_ns, back, &at))
    return out_of_range(text);
  return at;
}

std::expected<int64_t, std::string> iso_8601(std::string_view text) {
  cursor c{text};
  int y = 0, mon = 0, d = 0;
  if (!(c.number(4, y) && c.skip('-') && c.number(2, mon) && c.skip('-') && c.number(2, d)))
    return not_a_time(text);
  int h = 0, min = 0, s = 0, offset_h = 0, offset_min = 0;
  int64_t fraction_ns = 0, offset_sign = 0;
  if (!c.rest.empty()) {
    if (!((c.skip('T') || c.skip(' ')) && c.number(2, h) && c.skip(':') && c.number(2, min)))
      return not_a_time(text);
    if (c.skip(':')) {
      if (!c.number(2, s)) return not_a_time(text);
      if (c.skip('.')) {
        int digits = 0;
        for (int digit = 0; digits < 9 && c.number(1, digit); ++digits) fraction_ns = fraction_ns * 10 + digit;
        if (digits == 0) return not_a_time(text);
        for (int i = digits; i < 9; ++i) fraction_ns *= 10;
      }
    }
    if (c.skip('+')) offset_sign = 1;
    else if (c.skip('-')) offset_sign = -1;
    if (offset_sign != 0) {
      if (!c.number(2, offset_h)) return not_a_time(text);
      const bool colon = c.skip(':');
      if (!c.number(2, offset_min) && colon) return not_a_time(text);
    } else {
      c.skip('Z');
    }
    if (!c.rest.empty() || h > 23 || min > 59 || s > 59 || offset_h > 23 || offset_min > 59)
      return not_a_time(text);
  }
  const year_month_day date{year(y), month(unsigned(mon)), day(unsigned(d))};
  if (!date.ok()) return std::unexpected("'" + std::string(text.substr(0, 10)) + "' is not a date");
  const __int128 ns = __int128(sys_days(date).time_since_epoch().count()) * 86400 * ns_per_s +
                      (int64_t(h) * 3600 + min * 60 + s) * ns_per_s + fraction_ns -
                      offset_sign * (int64_t(offset_h) * 3600 + offset_min * 60) * ns_per_s;
  if (ns < std::numeric_limits<int64_t>::min() || ns > std::numeric_limits<int64_t>::max())
    return out_of_range(text);
  return int64_t(ns);
}

}  // namespace

std::expected<int64_t, std::string> parse_query_time(std::string_view text, int64_t now_ns) {
  if (text == "now") return now_ns;
  if (text.empty()) return not_a_time(text);
  if (text.size() > 4 && text[4] == '-') return iso_8601(text);
  return relative(text, now_ns);
}

std::string format_time(int64_t unix_ns) {
  const sys_time<milliseconds> t = floor<milliseconds>(sys_time<nanoseconds>(nanoseconds(unix_ns)));
  const sys_days date = floor<days>(t);
  const year_month_day ymd(date);
  const hh_mm_ss time(t - date);
  char out[32];
  std::snprintf(out, sizeof out, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", int(ymd.year()),
                unsigned(ymd.month()), unsigned(ymd.day()), int(time.hours().count()),
                int(time.minutes().count()), int(time.seconds().count()),
                int(time.subseconds().count()));
  return out;
}

}  // namespace fnmesh::collector
