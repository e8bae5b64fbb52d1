#include "trigger-adapters/cron/schedule.h"

#include <gtest/gtest.h>

namespace fnmesh::cron {
namespace {

using namespace std::chrono;

sys_seconds at(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
  return sys_days(year(y) / month(mo) / day(d)) + hours(h) + minutes(mi) + seconds(s);
}

// The first `n` ticks of `expression` after `from`.
std::vector<sys_seconds> ticks(std::string_view expression, sys_seconds from, int n = 1) {
  auto s = schedule::parse(expression);
  EXPECT_TRUE(s) << expression << ": " << s.error();
  std::vector<sys_seconds> out;
  for (sys_seconds t = from; s && int(out.size()) < n;) out.push_back(t = s->next_after(t));
  return out;
}

std::string error_of(std::string_view expression) {
  auto s = schedule::parse(expression);
  return s ? "" : s.error();
}

TEST(schedule, steps_lists_and_ranges) {
  const auto friday = at(2026, 11, 27, 21, 3, 10);
  EXPECT_EQ(
      ticks("*/5 * * * *", friday, 3),
      (std::vector{at(2026, 11, 27, 21, 5), at(2026, 11, 27, 21, 10), at(2026, 11, 27, 21, 15)}));
  EXPECT_EQ(ticks("*/5 * * * *", at(2026, 11, 27, 21, 5)), std::vector{at(2026, 11, 27, 21, 10)})
      << "strictly after";
  EXPECT_EQ(
      ticks("5,10-11,50-59/4 * * * *", at(2026, 11, 27, 21, 0), 6),
      (std::vector{at(2026, 11, 27, 21, 5), at(2026, 11, 27, 21, 10), at(2026, 11, 27, 21, 11),
                   at(2026, 11, 27, 21, 50), at(2026, 11, 27, 21, 54), at(2026, 11, 27, 21, 58)}));
  EXPECT_EQ(
      ticks("30 8-18/5 * * *", friday, 3),
      (std::vector{at(2026, 11, 28, 8, 30), at(2026, 11, 28, 13, 30), at(2026, 11, 28, 18, 30)}));
  EXPECT_EQ(ticks("  0\t0 * * *  ", friday), std::vector{at(2026, 11, 28)})
      << "any blanks between fields";
}

TEST(schedule, month_and_weekday_names_in_any_case) {
  const auto friday = at(2026, 11, 27, 10, 0);
  EXPECT_EQ(ticks("0 9 * * mon-fri", friday, 2),
            (std::vector{at(2026, 11, 30, 9), at(2026, 12, 1, 9)}));
  EXPECT_EQ(ticks("0 0 1 JAN,Jul *", friday, 2), (std::vector{at(2027, 1, 1), at(2027, 7, 1)}));
  EXPECT_EQ(ticks("0 0 1 feb-Apr/2 *", friday, 2), (std::vector{at(2027, 2, 1), at(2027, 4, 1)}));
}

TEST(schedule, sunday_is_0_and_7) {
  const auto friday = at(2026, 11, 27, 10, 0);
  for (auto e : {"0 0 * * 0", "0 0 * * 7", "0 0 * * sun", "0 0 * * SUN"})
    EXPECT_EQ(ticks(e, friday, 2), (std::vector{at(2026, 11, 29), at(2026, 12, 6)})) << e;
  EXPECT_EQ(ticks("0 0 * * 6-7", friday, 3),
            (std::vector{at(2026, 11, 28), at(2026, 11, 29), at(2026, 12, 5)}));
}

TEST(schedule, across_month_and_year_ends) {
  EXPECT_EQ(ticks("0 0 1 * *", at(2026, 1, 31, 12)), std::vector{at(2026, 2, 1)});
  EXPECT_EQ(ticks("* * * * *", at(2026, 12, 31, 23, 59, 30)), std::vector{at(2027, 1, 1)});
  EXPECT_EQ(ticks("0 0 31 * *", at(2026, 4, 15), 2),
            (std::vector{at(2026, 5, 31), at(2026, 7, 31)}))
      << "months without a 31st are skipped";
}

TEST(schedule, leap_years) {
  EXPECT_EQ(ticks("0 12 29 2 *", at(2026, 3, 1), 2),
            (std::vector{at(2028, 2, 29, 12), at(2032, 2, 29, 12)}));
  EXPECT_EQ(ticks("0 12 29 2 *", at(2096, 3, 1)), std::vector{at(2104, 2, 29, 12)})
      << "2100 is no leap year";
  EXPECT_EQ(ticks("0 0 * 3 *", at(2028, 2, 28, 0, 1)), std::vector{at(2028, 3, 1)});
  EXPECT_EQ(ticks("0 0 1 3 *", at(2028, 2, 28), 1), std::vector{at(2028, 3, 1)});
}

TEST(schedule, day_of_month_or_day_of_week_when_both_are_restricted) {
  // November 2026: Fridays are the 6th, 13th, 20th, 27th.
  EXPECT_EQ(ticks("0 0 13 * 5", at(2026, 11, 1), 3),
            (std::vector{at(2026, 11, 6), at(2026, 11, 13), at(2026, 11, 20)}))
      << "either the 13th or a Friday";
  EXPECT_EQ(ticks("0 0 */2 * fri", at(2026, 11, 1), 2),
            (std::vector{at(2026, 11, 13), at(2026, 11, 27)}))
      << "a field beginning with * is unrestricted: odd days that are Fridays";
  EXPECT_EQ(ticks("0 0 13 * *", at(2026, 11, 1)), std::vector{at(2026, 11, 13)});
  EXPECT_EQ(ticks("0 0 * * 5", at(2026, 11, 7)), std::vector{at(2026, 11, 13)});
}

TEST(schedule, macros) {
  const auto t = at(2026, 11, 27, 21, 22, 56);
  EXPECT_EQ(ticks("@yearly", t), std::vector{at(2027, 1, 1)});
  EXPECT_EQ(ticks("@annually", t), std::vector{at(2027, 1, 1)});
  EXPECT_EQ(ticks("@monthly", t), std::vector{at(2026, 12, 1)});
  EXPECT_EQ(ticks("@weekly", t), std::vector{at(2026, 11, 29)});
  EXPECT_EQ(ticks("@daily", t), std::vector{at(2026, 11, 28)});
  EXPECT_EQ(ticks("@midnight", t), std::vector{at(2026, 11, 28)});
  EXPECT_EQ(ticks("@hourly", t, 2), (std::vector{at(2026, 11, 27, 22), at(2026, 11, 27, 23)}));
}

TEST(schedule, every_ticks_on_multiples_of_its_period_since_the_epoch) {
  const auto t = at(2026, 11, 27, 21, 22, 56);
  EXPECT_EQ(ticks("@every 1s", t, 2), (std::vector{t + 1s, t + 2s}));
  EXPECT_EQ(ticks("@every 30s", t), std::vector{at(2026, 11, 27, 21, 23, 0)});
  EXPECT_EQ(ticks("@every 5m", t), std::vector{at(2026, 11, 27, 21, 25)});
  EXPECT_EQ(ticks("@every 1h30m", t, 2),
            (std::vector{at(2026, 11, 27, 22, 30), at(2026, 11, 28, 0, 0)}));
  EXPECT_EQ(ticks("@every 90s", t), ticks("@every 1m30s", t));
  for (auto e : {"@every 7s", "@every 13m", "@every 2h5m3s"}) {
    const auto s = schedule::parse(e);
    ASSERT_TRUE(s) << e;
    // Two adapters started at different times meet on the same ticks.
    EXPECT_EQ(s->next_after(s->next_after(t)), s->next_after(s->next_after(t + 1s))) << e;
  }
  EXPECT_EQ(schedule::parse("@every 7s")->next_after(t).time_since_epoch().count() % 7, 0);
  EXPECT_EQ(schedule::parse("@every 1s")->next_after(sys_seconds(-1s)), sys_seconds(0s));
}

TEST(schedule, errors_name_the_field_and_why) {
  const std::pair<const char*, const char*> cases[] = {
      {"* * *",
       "must be a cron expression of 5 fields (minute hour day-of-month month day-of-week), "
       "a macro such as @daily or @every <duration>; got 3 fields"},
      {"",
       "must be a cron expression of 5 fields (minute hour day-of-month month day-of-week), "
       "a macro such as @daily or @every <duration>; got 0 fields"},
      {"* * * * * *",
       "must be a cron expression of 5 fields (minute hour day-of-month month day-of-week), "
       "a macro such as @daily or @every <duration>; got 6 fields"},
      {"60 * * * *", "minute: 60 is out of range 0-59"},
      {"* 24 * * *", "hour: 24 is out of range 0-23"},
      {"* * 0 * *", "day-of-month: 0 is out of range 1-31"},
      {"* * * 13 *", "month: 13 is out of range 1-12"},
      {"* * * * 8", "day-of-week: 8 is out of range 0-7"},
      {"* * * * fri-mon", "day-of-week: range fri-mon goes backwards"},
      {"* * * * monday", "day-of-week: 'monday' is neither a number nor a name (sun-sat)"},
      {"* * * foo *", "month: 'foo' is neither a number nor a name (jan-dec)"},
      {"x * * * *", "minute: 'x' is not a number"},
      {"0 0 L * *", "day-of-month: 'L' is not a number"},
      {"1,,2 * * * *", "minute: empty list item in '1,,2'"},
      {"*/0 * * * *", "minute: step 0 must be 1 or more"},
      {"*/x * * * *", "minute: step 'x' is not a number"},
      {"5/15 * * * *", "minute: a step goes after * or a range (*/n, a-b/n), got 5/15"},
      {"5- * * * *", "minute: a number is missing"},
      {"0 0 30 2 *", "day-of-month: 30 never falls in month 2, so the schedule would never run"},
      {"@every", "@every: missing duration (e.g. @every 5m)"},
      {"@every 0s", "@every: 0s is below the minimum of 1s"},
      {"@every 5", "@every: '5' is not a duration of whole h, m and s (e.g. 30s, 5m, 1h30m)"},
      {"@every 500ms",
       "@every: '500ms' is not a duration of whole h, m and s (e.g. 30s, 5m, 1h30m)"},
      {"@every 1d", "@every: '1d' is not a duration of whole h, m and s (e.g. 30s, 5m, 1h30m)"},
      {"@every 1h 30m", "@every: one duration without spaces (e.g. @every 1h30m)"},
      {"@daily 5", "@daily: takes nothing after it"},
      {"@reboot", "@reboot: not supported (cron ticks on a clock; the adapter has no boot)"},
      {"@fortnightly",
       "@fortnightly: unknown macro (@yearly, @annually, @monthly, @weekly, @daily, "
       "@midnight, @hourly or @every <duration>)"},
  };
  for (const auto& [expression, error] : cases)
    EXPECT_EQ(error_of(expression), error) << expression;
}

}  // namespace
}  // namespace fnmesh::cron
