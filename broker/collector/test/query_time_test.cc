#include "broker/collector/query_time.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

using fnmesh::collector::format_time;
using fnmesh::collector::parse_query_time;

namespace {

constexpr int64_t s = 1'000'000'000;
constexpr int64_t ms = 1'000'000;
constexpr int64_t nov_27_2026 = 1'795'737'600 * s;  // 2026-11-27T00:00:00Z
constexpr int64_t now = nov_27_2026 + 10 * 3600 * s;

int64_t parsed(std::string_view text) {
  auto t = parse_query_time(text, now);
  EXPECT_TRUE(t.has_value()) << text << ": " << t.error();
  return t.value_or(-1);
}

std::string error_of(std::string_view text) {
  auto t = parse_query_time(text, now);
  return t ? "parsed as " + format_time(*t) : t.error();
}

std::string not_a_time(std::string_view text) {
  return "'" + std::string(text) + "' is not a time (ISO 8601 like 2026-11-27T10:00Z, or relative like 1h, 7d)";
}

TEST(query_time, iso_8601_forms) {
  EXPECT_EQ(parsed("2026-11-27"), nov_27_2026);
  EXPECT_EQ(parsed("2026-11-27T10:00Z"), nov_27_2026 + 10 * 3600 * s);
  EXPECT_EQ(parsed("2026-11-27T10:00"), nov_27_2026 + 10 * 3600 * s);
  EXPECT_EQ(parsed("2026-11-27T10:00:00Z"), nov_27_2026 + 10 * 3600 * s);
  EXPECT_EQ(parsed("2026-11-27 10:00:00"), nov_27_2026 + 10 * 3600 * s);
  EXPECT_EQ(parsed("2026-11-27T23:59:59Z"), nov_27_2026 + 86'399 * s);
  EXPECT_EQ(parsed("2026-11-27T10:00:00.250+01:00"), nov_27_2026 + 9 * 3600 * s + 250 * ms);
  EXPECT_EQ(parsed("2026-11-27T10:00:00.250-0530"), nov_27_2026 + (15 * 3600 + 30 * 60) * s + 250 * ms);
  EXPECT_EQ(parsed("2026-11-27T10:00+02"), nov_27_2026 + 8 * 3600 * s);
  EXPECT_EQ(parsed("2026-11-27T10:00-00:00"), nov_27_2026 + 10 * 3600 * s);
  EXPECT_EQ(parsed("2026-11-27T00:30+01:00"), nov_27_2026 - 30 * 60 * s);  // the day before in UTC
  EXPECT_EQ(parsed("2026-11-27T00:00:00.5Z"), nov_27_2026 + 500 * ms);
  EXPECT_EQ(parsed("2026-11-27T00:00:00.000000001Z"), nov_27_2026 + 1);
  EXPECT_EQ(parsed("2026-11-27T00:00:00.123456789Z"), nov_27_2026 + 123'456'789);
  EXPECT_EQ(parsed("2024-02-29"), 1'709'164'800 * s);
  EXPECT_EQ(parsed("2000-01-01T00:00:00Z"), 946'684'800 * s);
  EXPECT_EQ(parsed("1970-01-01"), 0);
  EXPECT_EQ(parsed("1969-12-31T23:59:59Z"), -s);
  EXPECT_EQ(parsed("1677-09-22"), -9'223'286'400 * s);
  EXPECT_EQ(parsed("2262-04-11"), 9'223'286'400 * s);
}

TEST(query_time, relative_and_now) {
  EXPECT_EQ(parsed("now"), now);
  EXPECT_EQ(parsed("90s"), now - 90 * s);
  EXPECT_EQ(parsed("30m"), now - 30 * 60 * s);
  EXPECT_EQ(parsed("1h"), now - 3600 * s);
  EXPECT_EQ(parsed("7d"), now - 7 * 86'400 * s);
  EXPECT_EQ(parsed("2w"), now - 14 * 86'400 * s);
  EXPECT_EQ(parsed("007d"), now - 7 * 86'400 * s);
  EXPECT_EQ(parsed("100000d"), now - 100'000 * (86'400 * s));  // before 1970: negative, still a time
}

TEST(query_time, bad_text_says_what_is_accepted) {
  for (const char* bad :
       {"", "yesterday", "NOW", "now ", " now", "1", "h", "0h", "-1h", "+1h", "1.5h", "1H", "1y", "1 h", "1hh",
        "h1", "2026", "2026-11", "2026-11-2", "26-11-27", "2026/11/27", "2026-11-27T", "2026-11-27T10",
        "2026-11-27T10:0", "2026-11-27T1:00", "2026-11-27T10:00:0", "2026-11-27T10:00:00.", "2026-11-27T10:00.5Z",
        "2026-11-27T10:00:00.1234567890Z", "2026-11-27Z", "2026-11-27 ", "2026-11-27T10:00Zjunk",
        "2026-11-27T10:00ZZ", "2026-11-27T10:00+", "2026-11-27T10:00+1", "2026-11-27T10:00+01:",
        "2026-11-27T10:00+01:0", "2026-11-27T10:00+013", "2026-11-27T10:00+01:00Z", "2026-11-27T10:00:00 Z",
        "2026-11-27t10:00z", "2026-11-27T24:00Z", "2026-11-27T10:60Z", "2026-11-27T10:00:60Z",
        "2026-11-27T10:00+24:00", "2026-11-27T10:00+01:60", "2026-11-27x", "2026-11-27T10:00:00,5Z",
        "+2026-11-27", "2026-11-27\n"})
    EXPECT_EQ(error_of(bad), not_a_time(bad)) << bad;
}

TEST(query_time, impossible_dates_are_named) {
  EXPECT_EQ(error_of("2026-02-30"), "'2026-02-30' is not a date");
  EXPECT_EQ(error_of("2026-02-29T10:00Z"), "'2026-02-29' is not a date");
  EXPECT_EQ(error_of("2026-13-01"), "'2026-13-01' is not a date");
  EXPECT_EQ(error_of("2026-00-10"), "'2026-00-10' is not a date");
  EXPECT_EQ(error_of("2026-04-31"), "'2026-04-31' is not a date");
  EXPECT_EQ(error_of("2026-01-00"), "'2026-01-00' is not a date");
  EXPECT_EQ(error_of("2100-02-29"), "'2100-02-29' is not a date");
}

TEST(query_time, beyond_int64_ns_is_out_of_range) {
  EXPECT_EQ(error_of("2262-04-12"), "'2262-04-12' is out of range");
  EXPECT_EQ(error_of("1677-09-21"), "'1677-09-21' is out of range");
  EXPECT_EQ(error_of("9999-12-31T23:59:59Z"), "'9999-12-31T23:59:59Z' is out of range");
  EXPECT_EQ(error_of("16000000w"), "'16000000w' is out of range");
  EXPECT_EQ(error_of("99999999999999999999s"), "'99999999999999999999s' is out of range");
  EXPECT_EQ(parse_query_time("1s", std::numeric_limits<int64_t>::min()).error(), "'1s' is out of range");
}

TEST(query_time, format_time_is_utc_with_milliseconds) {
  EXPECT_EQ(format_time(nov_27_2026 + 10 * 3600 * s + 250 * ms), "2026-11-27T10:00:00.250Z");
  EXPECT_EQ(format_time(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_time(999'999), "1970-01-01T00:00:00.000Z");  // truncated, not rounded
  EXPECT_EQ(format_time(-1), "1969-12-31T23:59:59.999Z");        // toward the past
  EXPECT_EQ(format_time(1'709'164'800 * s + 86'399 * s + 999 * ms), "2024-02-29T23:59:59.999Z");
  EXPECT_EQ(format_time(std::numeric_limits<int64_t>::max()), "2262-04-11T23:47:16.854Z");
  EXPECT_EQ(format_time(std::numeric_limits<int64_t>::min()), "1677-09-21T00:12:43.145Z");
}

TEST(query_time, format_then_parse_round_trips) {
  for (const char* text : {"2026-11-27T10:00:00.250Z", "1970-01-01T00:00:00.000Z", "1969-07-20T20:17:40.001Z",
                           "2024-02-29T23:59:59.999Z", "2000-03-01T00:00:00.000Z", "1677-09-22T00:00:00.000Z",
                           "2262-04-11T23:47:16.854Z"})
    EXPECT_EQ(format_time(parsed(text)), text);
  EXPECT_EQ(format_time(parsed("2026-11-27T10:00:00.250+01:00")), "2026-11-27T09:00:00.250Z");
  EXPECT_EQ(format_time(parsed("2026-11-27")), "2026-11-27T00:00:00.000Z");
  EXPECT_EQ(format_time(parsed("7d")), "2026-11-20T10:00:00.000Z");
  for (int64_t t = -3 * 86'400 * s; t < 800 * 86'400 * s; t += 86'400 * s + 3'601'001 * ms)
    EXPECT_EQ(parsed(format_time(t)), t);
}

}  // namespace
