#include "trigger-adapters/cron/scheduler.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/errc.h"
#include "tests/support/eventually.h"
#include "tests/support/function_spec.h"

namespace fnmesh::cron {
namespace {

using namespace std::chrono;
using namespace std::chrono_literals;

// The time part of a ULID: its first 10 characters, Crockford base 32, in milliseconds.
int64_t ulid_ms(std::string_view id) {
  constexpr std::string_view digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  int64_t ms = 0;
  for (char c : id.substr(0, 10)) ms = ms * 32 + int64_t(digits.find(c));
  return ms;
}

TEST(cron_tick, invocation_id_is_the_same_for_the_same_tick_and_its_time_is_the_tick) {
  const tick t{"report", "*/5 * * * *", sys_seconds(1'795'813'500s)};
  const std::string id = invocation_id("default", t);
  EXPECT_EQ(id.size(), 26u);
  EXPECT_EQ(id, invocation_id("default", tick{"report", "*/5 * * * *", t.time}));
  EXPECT_EQ(ulid_ms(id), 1'795'813'500'000);
  EXPECT_NE(id, invocation_id("acme", t));
  EXPECT_NE(id, invocation_id("default", tick{"other", t.expression, t.time}));
  EXPECT_EQ(id, invocation_id("default", tick{t.function, "@every 5m", t.time}))
      << "function + tick time: two expressions on one instant run it once";
  EXPECT_NE(id, invocation_id("default", tick{t.function, t.expression, t.time + 300s}));
}

TEST(cron_tick, payload_names_schedule_tick_and_function) {
  const tick t{"report", "*/5 * * * *", sys_days(2026y / 11 / 27) + 21h + 5min};
  EXPECT_EQ(payload(t),
            R"({"schedule":"*/5 * * * *","tick":"2026-11-27T21:05:00Z","function":"report"})");
}

TEST(cron_scheduler, follows_the_specs_of_its_tenant) {
  scheduler s("default");
  s.update("default.a",
           test::function_record_of({.name = "a", .cron = {"@hourly", "*/5 * * * *", "@hourly"}}));
  EXPECT_EQ(s.schedules(), 2u) << "an expression given twice is one schedule";
  s.update("acme.a", test::function_record_of({.name = "a", .tenant = "acme", .cron = {"@daily"}}));
  EXPECT_EQ(s.schedules(), 2u) << "another tenant's";
  s.update("default.b", test::function_record_of({.name = "b", .cron = {"@daily", "61 * * * *"}}));
  EXPECT_EQ(s.schedules(), 3u) << "the bad expression is skipped";
  s.update("default.a", test::function_record_of({.name = "a", .cron = {"@hourly"}}));
  EXPECT_EQ(s.schedules(), 2u);
  s.update("default.a", nullptr);
  EXPECT_EQ(s.schedules(), 1u);
  s.update("default.b", test::function_record_of({.name = "b"}));
  EXPECT_EQ(s.schedules(), 0u);
  EXPECT_NE(s.metrics().find("\nfnmesh_cron_schedules 0\n"), std::string::npos) << s.metrics();
}

TEST(cron_scheduler, publishes_each_tick_once_and_retries_a_failed_publish) {
  scheduler s("default", 60s, 20ms);
  std::mutex m;
  std::vector<tick> attempts;
  auto publish = [&](const tick& t) -> result<void> {
    std::lock_guard lock(m);
    attempts.push_back(t);
    if (t.function == "gone") return fail(errc::not_found);
    if (attempts.size() == 1) return fail(errc::unavailable);
    return {};
  };
  const auto armed = system_clock::now();
  s.update("default.every", test::function_record_of({.name = "every", .cron = {"@every 1s"}}));
  std::thread runner([&] { s.run(publish); });
  ASSERT_TRUE(test::eventually([&] { return s.ticks_published() >= 2; }, 5s));
  s.update("default.gone", test::function_record_of({.name = "gone", .cron = {"@every 1s"}}));
  ASSERT_TRUE(test::eventually(
      [&] {
        std::lock_guard lock(m);
        return std::any_of(attempts.begin(), attempts.end(),
                           [](const tick& t) { return t.function == "gone"; });
      },
      3s));
  s.stop();
  runner.join();

  std::lock_guard lock(m);
  ASSERT_GE(attempts.size(), 3u);
  EXPECT_GT(attempts[0].time, armed - 1s) << "no backfill";
  EXPECT_EQ(attempts[1].time, attempts[0].time) << "the failed tick again";
  EXPECT_EQ(attempts[2].time, attempts[0].time + 1s);
  EXPECT_EQ(std::count_if(attempts.begin(), attempts.end(),
                          [](const tick& t) { return t.function == "gone"; }),
            1)
      << "a tick of a removed function is not retried";
  EXPECT_EQ(s.publish_failures(), 2u);
  EXPECT_NE(s.metrics().find("\nfnmesh_cron_publish_failures_total 2\n"), std::string::npos)
      << s.metrics();
}

}  // namespace
}  // namespace fnmesh::cron
