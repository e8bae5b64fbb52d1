// fnmesh-cron as a user meets it: the real binary (two of them where exactly-once is
// promised) against a real nats-server, counting what reaches the function's consumer.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <set>
#include <thread>

#include "broker/client/connection.h"
#include "broker/client/event_id.h"
#include "broker/client/kv.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "tests/support/bootstrapped_nats.h"
#include "tests/support/child_process.h"
#include "tests/support/function_spec.h"
#include "tests/support/invocation_queue.h"
#include "tests/support/metrics_page.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fnmesh {
namespace {

using test::http_get;
using test::sample;

using namespace std::chrono_literals;

// One invocation as the function would see it.
struct tick_seen {
  std::string id;
  std::string schedule;  // the source, and the payload's "schedule"
  int64_t tick_s = 0;    // the payload's "tick", as Unix seconds
};

int64_t unix_seconds(const std::string& iso) {
  std::tm tm{};
  if (!strptime(iso.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm)) return -1;
  return int64_t(timegm(&tm));
}

std::vector<tick_seen> ticks_of(const std::vector<std::vector<uint8_t>>& invocations) {
  std::vector<tick_seen> out;
  for (const auto& data : invocations) {
    const auto* inv = proto::verified<proto::Invocation>(data);
    if (!inv) continue;
    EXPECT_EQ(inv->trigger(), proto::Trigger::cron);
    EXPECT_EQ(proto::view(inv->content_type()), "application/json");
    const auto body = nlohmann::json::parse(proto::text(proto::bytes(inv->payload())));
    tick_seen t{std::string(proto::view(inv->id())), body.at("schedule"),
                unix_seconds(body.at("tick"))};
    EXPECT_EQ(proto::view(inv->source()), t.schedule);
    EXPECT_EQ(body.at("function"), proto::view(inv->function()));
    // The id every adapter derives for this tick (function + tick time): its time part is the tick.
    EXPECT_EQ(t.id, broker::event_invocation_id(
                        t.tick_s * 1'000'000'000, 0,
                        broker::function_key("default", proto::view(inv->function()))));
    out.push_back(std::move(t));
  }
  return out;
}

bool any_tick(const std::vector<tick_seen>& seen) { return !seen.empty(); }

// Pulls until `enough(ticks so far)` holds or `timeout` passes: the ticks seen.
template <class Pred>
std::vector<tick_seen> pull_until(test::invocation_queue& queue, Pred enough,
                                  std::chrono::milliseconds timeout) {
  std::vector<tick_seen> seen;
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!enough(seen) && std::chrono::steady_clock::now() < until)
    for (auto& t : ticks_of(queue.pull(200ms))) seen.push_back(std::move(t));
  return seen;
}

class cron_adapter : public test::bootstrapped_nats {
 protected:
  void deploy(const std::string& name, std::vector<std::string> cron) {
    ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = name,
                                                             .runtime = proto::Runtime::exec,
                                                             .handler = "./run",
                                                             .cron = std::move(cron)})));
  }

  test::child_process start_adapter(const std::string& log, int metrics_port = 0) {
    auto p = test::child_process::spawn(
        {.program = test::bin("fnmesh-cron"),
         .args = {"--nats", nats_->url(), "--log-level", "debug", "--metrics-listen",
                  "127.0.0.1:" + std::to_string(metrics_port)},
         .log = dir_.path() / log});
    EXPECT_TRUE(p.wait_for_log("following", 10s)) << p.log_text();
    return p;
  }

  test::temp_dir dir_{"cron-adapter"};
};

TEST_F(cron_adapter, two_adapters_publish_each_tick_exactly_once) {
  deploy("every-second", {"@every 1s"});
  test::invocation_queue queue(*conn_, "every-second");
  const int port_a = test::free_loopback_port(), port_b = test::free_loopback_port();
  auto a = start_adapter("a.log", port_a);
  auto b = start_adapter("b.log", port_b);
  const auto seen = ticks_of(queue.pull(4s));
  const std::string metrics_a = http_get(port_a, "/metrics"), metrics_b = http_get(port_b, "/metrics");
  EXPECT_EQ(a.stop(5s), 0) << a.log_text();
  EXPECT_EQ(b.stop(5s), 0) << b.log_text();

  ASSERT_GE(seen.size(), 4u) << a.log_text() << b.log_text();
  std::set<std::string> ids;
  std::set<int64_t> times;
  for (const auto& t : seen) {
    ids.insert(t.id);
    times.insert(t.tick_s);
    EXPECT_EQ(t.schedule, "@every 1s");
  }
  EXPECT_EQ(ids.size(), seen.size()) << "an id twice";
  EXPECT_EQ(times.size(), seen.size()) << "a tick twice";
  EXPECT_EQ(*times.rbegin() - *times.begin() + 1, int64_t(times.size())) << "a tick missing";
  // Both adapters published every tick; JetStream kept one of each.
  EXPECT_GE(sample(metrics_a, "fnmesh_cron_ticks_total"), 4) << metrics_a;
  EXPECT_GE(sample(metrics_b, "fnmesh_cron_ticks_total"), 4) << metrics_b;
  EXPECT_EQ(sample(metrics_a, "fnmesh_cron_schedules"), 1) << metrics_a;
  EXPECT_EQ(sample(metrics_a, "fnmesh_cron_publish_failures_total"), 0) << metrics_a;
}

TEST_F(cron_adapter, deploys_changes_and_removals_are_followed_without_a_restart) {
  deploy("other", {});
  auto adapter = start_adapter("follow.log");
  EXPECT_TRUE(adapter.wait_for_log("following 0 schedules", 1s)) << adapter.log_text();

  deploy("late", {"@every 1s"});
  test::invocation_queue queue(*conn_, "late");
  EXPECT_TRUE(adapter.wait_for_log("late: 1 schedule (@every 1s); 1 in all", 5s))
      << adapter.log_text();
  EXPECT_EQ(pull_until(queue, any_tick, 3s).size(), 1u) << adapter.log_text();

  deploy("late", {"@every 2s"});
  EXPECT_TRUE(adapter.wait_for_log("late: 1 schedule (@every 2s)", 5s)) << adapter.log_text();
  auto changed = pull_until(
      queue,
      [](const auto& seen) {
        return std::count_if(seen.begin(), seen.end(),
                             [](const auto& t) { return t.schedule == "@every 2s"; }) >= 2;
      },
      6s);
  // A tick of the old schedule may have been on its way when the change took.
  std::erase_if(changed, [](const auto& t) { return t.schedule == "@every 1s"; });
  ASSERT_EQ(changed.size(), 2u) << adapter.log_text();
  for (const auto& t : changed) EXPECT_EQ(t.tick_s % 2, 0);

  auto functions = broker::kv_bucket::open(*conn_, broker::functions_bucket);
  ASSERT_TRUE(functions);
  ASSERT_TRUE((*functions)->erase(broker::function_key("default", "late")));
  EXPECT_TRUE(adapter.wait_for_log("late: 0 schedules; 0 in all", 5s)) << adapter.log_text();
  queue.pull(300ms);  // a tick on its way when the removal took
  EXPECT_TRUE(queue.pull(2500ms).empty()) << "ticks after the removal\n" << adapter.log_text();
  EXPECT_EQ(adapter.stop(5s), 0);
}

TEST_F(cron_adapter, ticks_resume_after_a_nats_server_restart_none_doubled) {
  deploy("steady", {"@every 1s"});
  test::invocation_queue queue(*conn_, "steady");
  const int port = test::free_loopback_port();
  auto adapter = start_adapter("restart.log", port);
  auto seen = pull_until(queue, any_tick, 3s);
  ASSERT_EQ(seen.size(), 1u) << adapter.log_text();

  nats_->stop();
  std::this_thread::sleep_for(1500ms);
  const auto back = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  nats_->restart();
  auto resumed = [back = back.time_since_epoch().count()](const std::vector<tick_seen>& seen) {
    auto later = [&](const tick_seen& t) { return t.tick_s > back; };
    return std::count_if(seen.begin(), seen.end(), later) >= 2;
  };
  const auto after = pull_until(queue, resumed, 6s);
  EXPECT_TRUE(resumed(after)) << "ticks did not resume\n" << adapter.log_text();
  seen.insert(seen.end(), after.begin(), after.end());
  for (auto& t : ticks_of(queue.pull(500ms))) seen.push_back(std::move(t));  // any copy on its way
  const std::string metrics = http_get(port, "/metrics");
  // The registry still follows deploys on the new connection.
  deploy("steady", {"@every 1s", "@hourly"});
  EXPECT_TRUE(adapter.wait_for_log("steady: 2 schedules", 5s)) << adapter.log_text();
  EXPECT_EQ(adapter.stop(5s), 0) << adapter.log_text();
  EXPECT_GE(sample(metrics, "fnmesh_cron_publish_failures_total"), 1) << metrics;

  std::set<std::string> ids;
  std::set<int64_t> times;
  for (const auto& t : seen) {
    ids.insert(t.id);
    times.insert(t.tick_s);
  }
  EXPECT_EQ(ids.size(), seen.size()) << "a tick published twice\n" << adapter.log_text();
  EXPECT_EQ(times.size(), seen.size());
  // The ticks that fell due while the server was down were retried once it was back.
  EXPECT_EQ(*times.rbegin() - *times.begin() + 1, int64_t(times.size())) << adapter.log_text();
}

TEST_F(cron_adapter, stops_on_sigterm_and_says_so_when_nats_is_unreachable) {
  auto adapter = start_adapter("stop.log");
  const auto asked = std::chrono::steady_clock::now();
  EXPECT_EQ(adapter.stop(5s), 0) << adapter.log_text();
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 2s);

  const std::string url = "nats://127.0.0.1:" + std::to_string(test::free_loopback_port());
  auto lost = test::child_process::spawn({.program = test::bin("fnmesh-cron"),
                                          .args = {"--nats", url},
                                          .log = dir_.path() / "lost.log"});
  EXPECT_EQ(lost.wait(10s), 1);
  const std::string said = lost.log_text();
  EXPECT_EQ(said.rfind("fnmesh-cron: cannot reach NATS at " + url + ": ", 0), 0u) << said;
  EXPECT_EQ(std::count(said.begin(), said.end(), '\n'), 1) << said;

  auto help = test::child_process::spawn(
      {.program = test::bin("fnmesh-cron"), .args = {"--help"}, .log = dir_.path() / "help.log"});
  EXPECT_EQ(help.wait(5s), 0);
  EXPECT_NE(help.log_text().find("--nats"), std::string::npos) << help.log_text();
}

}  // namespace
}  // namespace fnmesh
