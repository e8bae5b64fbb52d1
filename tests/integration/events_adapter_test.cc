// fnmesh-events as a user meets it: the real binary against a real nats-server. Events
// published on fnmesh.events.<subject> must invoke each subscribed function exactly once,
// with two adapters running, across adapter kills and nats-server restarts, when one
// subscriber's invocation cannot be stored for a while, and whoever publishes them (here
// also the npm package `nats`).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "broker/client/connection.h"
#include "broker/client/event_id.h"
#include "broker/client/invoker.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "flatbuffers/proto.h"
#include "tests/support/bootstrapped_nats.h"
#include "tests/support/child_process.h"
#include "tests/support/eventually.h"
#include "tests/support/function_spec.h"
#include "tests/support/invocation_queue.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fnmesh {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct stored_event {
  uint64_t seq = 0;
  int64_t stored_ns = 0;
};

std::string expected_id(const stored_event& e, std::string_view function) {
  return broker::event_invocation_id(e.stored_ns, e.seq, broker::function_key("default", function));
}

const proto::Invocation& invocation(const std::vector<uint8_t>& buffer) {
  return *proto::verified<proto::Invocation>(buffer);  // invocation_queue verified it
}

// The value of a counter in a Prometheus text page; -1 when absent.
int64_t counter(const std::string& page, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(page, m, std::regex("(^|\n)" + name + " (\\d+)\n"))) return -1;
  return std::stoll(m[2]);
}

class events_adapter_binary : public test::bootstrapped_nats {
 protected:
  void SetUp() override {
    bootstrapped_nats::SetUp();
    if (HasFatalFailure()) return;
    deploy("one-level", {"orders.*"});
    deploy("all-orders", {"payments.*", "orders.>"});
    deploy("payments", {"payments.*"});
  }

  void deploy(const std::string& name, std::vector<std::string> patterns) {
    ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = name,
                                                             .runtime = proto::Runtime::exec,
                                                             .handler = "./run",
                                                             .events = std::move(patterns)})));
  }

  test::child_process start_adapter(const std::string& log, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--nats", nats_->url(), "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = test::child_process::spawn(
        {.program = test::bin("fnmesh-events"), .args = std::move(args), .log = dir_ / log});
    EXPECT_TRUE(p.wait_for_log("consuming", 10s)) << p.log_text();
    return p;
  }

  stored_event publish_event(std::string_view subject, std::string_view data) {
    jsPubAck* ack = nullptr;
    const std::string subj = broker::event_subject(subject);
    EXPECT_EQ(js_Publish(&ack, conn_->js(), subj.c_str(), data.data(), int(data.size()), nullptr,
                         nullptr),
              NATS_OK);
    stored_event out;
    if (!ack) return out;
    out.seq = ack->Sequence;
    jsPubAck_Destroy(ack);
    natsMsg* m = nullptr;
    EXPECT_EQ(js_GetMsg(&m, conn_->js(), broker::events_stream.data(), out.seq, nullptr, nullptr),
              NATS_OK);
    out.stored_ns = natsMsg_GetTime(m);
    natsMsg_Destroy(m);
    return out;
  }

  // Publishes until the stream acks, through nats-server restarts; msg_id keeps a retried
  // publish from storing the event twice. Any thread.
  bool publish_retrying(std::string_view subject, std::string_view data, const std::string& msg_id) {
    const std::string subj = broker::event_subject(subject);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id.c_str();
    return test::eventually(
        [&] {
          jsPubAck* ack = nullptr;
          natsStatus s = js_Publish(&ack, conn_->js(), subj.c_str(), data.data(), int(data.size()),
                                    &po, nullptr);
          jsPubAck_Destroy(ack);
          return s == NATS_OK;
        },
        60s);
  }

  test::invocation_queue& queue(const std::string& function) {
    auto& q = queues_[function];
    if (!q) q = std::make_unique<test::invocation_queue>(*conn_, function);
    return *q;
  }

  // Every invocation of `function` until nothing new arrives for `idle`.
  std::vector<std::vector<uint8_t>> drain(const std::string& function, std::chrono::milliseconds idle) {
    std::vector<std::vector<uint8_t>> all;
    for (;;) {
      auto got = queue(function).pull(idle);
      if (got.empty()) return all;
      std::move(got.begin(), got.end(), std::back_inserter(all));
    }
  }

  // The adapter's /metrics page, fetched with curl from the URL it logged.
  std::string scrape(const test::child_process& adapter) {
    std::smatch m;
    const std::string log = adapter.log_text();
    if (!std::regex_search(log, m, std::regex(R"(metrics at (http://\S+/metrics))"))) {
      ADD_FAILURE() << "no metrics URL logged:\n" << log;
      return {};
    }
    auto curl = test::child_process::spawn(
        {.program = test::find_program("curl"),
         .args = {"-sS", "--max-time", "5", m[1].str()},
         .log = dir_ / ("scrape-" + std::to_string(++scrapes_) + ".txt")});
    EXPECT_EQ(curl.wait(10s), 0) << curl.log_text();
    return curl.log_text();
  }

  test::temp_dir dir_{"events-adapter"};
  std::map<std::string, std::unique_ptr<test::invocation_queue>> queues_;
  int scrapes_ = 0;
};

TEST_F(events_adapter_binary, one_event_invokes_each_subscriber_once_and_never_again_after_restart) {
  auto adapter = start_adapter("first.log");
  const auto event = publish_event("orders.created", R"({"id":7})");
  ASSERT_GT(event.seq, 0u);

  for (const char* fn : {"one-level", "all-orders"}) {
    auto got = queue(fn).pull(2s);
    ASSERT_EQ(got.size(), 1u) << fn << "\n" << adapter.log_text();
    const auto& inv = invocation(got[0]);
    EXPECT_EQ(proto::view(inv.function()), fn);
    EXPECT_EQ(inv.trigger(), proto::Trigger::event);
    EXPECT_EQ(proto::view(inv.source()), "fnmesh.events.orders.created");
    EXPECT_EQ(proto::text(proto::bytes(inv.payload())), R"({"id":7})");
    EXPECT_EQ(proto::view(inv.content_type()), "application/json");
    EXPECT_EQ(inv.reply(), nullptr);
    // The id a redelivery would publish again: derived from the stored event.
    EXPECT_EQ(proto::view(inv.id()), expected_id(event, fn));
  }
  EXPECT_TRUE(queue("payments").pull(500ms).empty());
  const std::string page = scrape(adapter);
  EXPECT_EQ(counter(page, "fnmesh_events_events_total"), 1) << page;
  EXPECT_EQ(counter(page, "fnmesh_events_invocations_total"), 2) << page;
  EXPECT_EQ(counter(page, "fnmesh_events_unmatched_total"), 0) << page;
  EXPECT_EQ(counter(page, "fnmesh_events_refused_total"), 0) << page;
  EXPECT_EQ(counter(page, "fnmesh_events_retried_total"), 0) << page;
  EXPECT_EQ(adapter.stop(10s), 0) << adapter.log_text();
  EXPECT_NE(adapter.log_text().find("stopped: 1 events, 2 invocations"), std::string::npos)
      << adapter.log_text();

  // Restarted: the acked event is not taken again; only the new one is dispatched.
  auto again = start_adapter("second.log");
  const auto second = publish_event("payments.settled", "plain text");
  auto payments = queue("payments").pull(2s);
  ASSERT_EQ(payments.size(), 1u) << again.log_text();
  EXPECT_EQ(proto::view(invocation(payments[0]).id()), expected_id(second, "payments"));
  EXPECT_EQ(queue("all-orders").pull(2s).size(), 1u);  // payments.* matches it too, once
  EXPECT_TRUE(queue("one-level").pull(500ms).empty());
  EXPECT_EQ(again.stop(10s), 0) << again.log_text();
  EXPECT_NE(again.log_text().find("stopped: 1 events, 2 invocations"), std::string::npos)
      << again.log_text();
}

TEST_F(events_adapter_binary, events_published_before_the_first_start_are_not_lost) {
  publish_event("orders.created", "{}");
  auto adapter = start_adapter("late.log");
  EXPECT_EQ(queue("one-level").pull(2s).size(), 1u) << adapter.log_text();
  EXPECT_EQ(queue("all-orders").pull(2s).size(), 1u);
  EXPECT_EQ(adapter.stop(10s), 0);
}

TEST_F(events_adapter_binary, unmatched_events_are_acked_and_counted) {
  auto adapter = start_adapter("unmatched.log");
  publish_event("nobody.listens", "{}");
  EXPECT_TRUE(queue("one-level").pull(1s).empty());
  EXPECT_TRUE(queue("all-orders").pull(200ms).empty());
  EXPECT_TRUE(queue("payments").pull(200ms).empty());
  const std::string page = scrape(adapter);
  EXPECT_EQ(counter(page, "fnmesh_events_unmatched_total"), 1) << page;
  EXPECT_EQ(counter(page, "fnmesh_events_events_total"), 1) << page;
  EXPECT_EQ(counter(page, "fnmesh_events_invocations_total"), 0) << page;
  EXPECT_EQ(adapter.stop(10s), 0);
  EXPECT_NE(adapter.log_text().find("1 unmatched"), std::string::npos) << adapter.log_text();
}

TEST_F(events_adapter_binary, two_adapters_at_once_invoke_each_subscriber_once_per_event) {
  auto first = start_adapter("first.log");
  auto second = start_adapter("second.log");
  constexpr int events = 500;
  std::set<std::string> want_one_level, want_all_orders;
  for (int i = 0; i < events; ++i) {
    const auto e = publish_event("orders.created", "{\"n\":" + std::to_string(i) + "}");
    want_one_level.insert(expected_id(e, "one-level"));
    want_all_orders.insert(expected_id(e, "all-orders"));
  }
  for (const auto& [fn, want] : {std::pair{"one-level", &want_one_level},
                                 std::pair{"all-orders", &want_all_orders}}) {
    auto ids = queue(fn).drain_ids(3s);
    EXPECT_EQ(ids.size(), size_t(events)) << fn;  // none twice
    EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), *want) << fn;
  }
  // They shared the work: each event was taken by one of them.
  const std::string a = scrape(first), b = scrape(second);
  EXPECT_EQ(counter(a, "fnmesh_events_events_total") + counter(b, "fnmesh_events_events_total"),
            events) << a << b;
  EXPECT_EQ(counter(a, "fnmesh_events_invocations_total") +
                counter(b, "fnmesh_events_invocations_total"),
            2 * events) << a << b;
  EXPECT_EQ(first.stop(10s), 0) << first.log_text();
  EXPECT_EQ(second.stop(10s), 0) << second.log_text();
}

TEST_F(events_adapter_binary, killed_mid_stream_and_restarted_every_subscriber_gets_each_event_once) {
  constexpr int events = 1500;
  for (int i = 0; i < events; ++i)
    publish_event("orders.created", "{\"n\":" + std::to_string(i) + "}");
  auto adapter = start_adapter("killed.log", {"--batch", "16", "--ack-wait", "2"});
  std::this_thread::sleep_for(300ms);
  adapter.signal(SIGKILL);  // between publishing invocations and acking their events
  adapter.wait(5s);

  auto again = start_adapter("after-kill.log");
  for (const char* fn : {"one-level", "all-orders"}) {
    auto ids = queue(fn).drain_ids(3s);
    std::set<std::string> unique(ids.begin(), ids.end());
    EXPECT_EQ(unique.size(), size_t(events)) << fn;  // none lost
    EXPECT_EQ(ids.size(), size_t(events)) << fn;     // none twice
  }
  EXPECT_EQ(again.stop(10s), 0);
}

// Two adapters run while 500 events stream in; one is SIGKILLed and restarted, then the
// nats-server itself is SIGKILLed and restarted 6 s later (the publisher retries with a
// Nats-Msg-Id meanwhile). Afterwards every subscriber has each event exactly once,
// and the adapter that lived through the restart still fetches events and still sees
// deploys (a function deployed after the restart gets its events).
TEST_F(events_adapter_binary, adapter_killed_and_nats_restarted_mid_stream_no_event_lost_or_doubled) {
  const std::vector<std::string> flags = {"--batch", "16", "--ack-wait", "2"};
  auto killed = start_adapter("killed.log", flags);
  auto survivor = start_adapter("survivor.log", flags);

  constexpr int events = 500;
  std::atomic<int> unpublished{0};
  std::jthread publisher([&] {  // joins on the way out, early ASSERTs included
    for (int i = 0; i < events; ++i) {
      const std::string n = std::to_string(i);
      if (!publish_retrying("orders.created", "{\"n\":" + n + "}", "stream-" + n)) ++unpublished;
      std::this_thread::sleep_for(8ms);
    }
  });
  std::this_thread::sleep_for(1s);
  killed.signal(SIGKILL);
  killed.wait(5s);
  auto restarted = start_adapter("restarted.log", flags);
  std::this_thread::sleep_for(500ms);
  nats_->kill();
  std::this_thread::sleep_for(6s);  // longer than nats.c's 5 s heartbeats: missed ones too
  nats_->restart();
  const auto restarted_at = std::chrono::steady_clock::now();

  // Deployed right after the restart: the survivor's registry watch must still follow the
  // bucket.
  ASSERT_TRUE(test::eventually(
      [&] {
        return bool(test::deploy_spec(*conn_, test::encode_spec({.name = "late",
                                                                 .runtime = proto::Runtime::exec,
                                                                 .handler = "./run",
                                                                 .events = {"late.*"}})));
      },
      10s));
  ASSERT_TRUE(survivor.wait_for_log("deployed default.late", 60s)) << survivor.log_text();
  std::printf("the survivor saw a deploy %.1f s after the nats-server restart\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted_at).count());
  publisher.join();
  ASSERT_EQ(unpublished, 0);
  EXPECT_EQ(restarted.stop(10s), 0) << restarted.log_text();  // the survivor alone from here

  std::set<std::string> want_late;
  for (int i = 0; i < 20; ++i)
    want_late.insert(expected_id(publish_event("late.ping", std::to_string(i)), "late"));
  auto late = queue("late").drain_ids(3s);
  EXPECT_EQ(late.size(), want_late.size()) << survivor.log_text();
  EXPECT_EQ(std::set<std::string>(late.begin(), late.end()), want_late);

  for (const std::string fn : {"one-level", "all-orders"}) {
    std::map<std::string, int> times;  // payload -> invocations carrying it
    std::set<std::string> ids;
    for (const auto& buffer : drain(fn, 3s)) {
      const auto& inv = invocation(buffer);
      ++times[std::string(proto::text(proto::bytes(inv.payload())))];
      ids.emplace(proto::view(inv.id()));
    }
    EXPECT_EQ(times.size(), size_t(events)) << fn;  // none lost
    for (int i = 0; i < events; ++i) {
      const std::string payload = "{\"n\":" + std::to_string(i) + "}";
      EXPECT_EQ(times[payload], 1) << fn << " got " << payload << " " << times[payload] << " times";
    }
    EXPECT_EQ(ids.size(), size_t(events)) << fn;  // one id per event
  }
  const std::string page = scrape(survivor);
  std::printf("the survivor: %lld events, %lld retried, %lld failed fetches\n",
              (long long)counter(page, "fnmesh_events_events_total"),
              (long long)counter(page, "fnmesh_events_retried_total"),
              (long long)counter(page, "fnmesh_events_fetch_failures_total"));
  EXPECT_EQ(survivor.stop(10s), 0) << survivor.log_text();
}

// One subscriber's invocation cannot be stored (its subject is full) while the others'
// are, so the event comes back every second. FNMESH_INVOKE's duplicate window is cut to
// 100 ms, as if each redelivery came after a NATS outage longer than the real 2 minutes:
// the subscribers stored the first time must still get the event once, and the blocked
// one gets it once it can.
TEST_F(events_adapter_binary, a_redelivered_event_republishes_only_the_subscribers_not_yet_stored) {
  deploy("blocked", {"orders.*"});
  broker::invoker invoker(*conn_, nullptr);
  broker::invocation_request plug_request;
  plug_request.function = "blocked";
  auto plug = invoker.invoke(plug_request);
  ASSERT_TRUE(plug) << plug.error().message();

  jsStreamInfo* info = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&info, conn_->js(), broker::invoke_stream.data(), nullptr, nullptr),
            NATS_OK);
  info->Config->MaxMsgsPerSubject = 1;  // "blocked" holds its plug: the stream refuses more
  info->Config->Discard = js_DiscardNew;
  info->Config->DiscardNewPerSubject = true;
  info->Config->Duplicates = std::chrono::nanoseconds(100ms).count();
  jsStreamInfo* updated = nullptr;
  jsErrCode jerr{};
  const natsStatus s = js_UpdateStream(&updated, conn_->js(), info->Config, nullptr, &jerr);
  jsStreamInfo_Destroy(updated);
  jsStreamInfo_Destroy(info);
  ASSERT_EQ(s, NATS_OK) << nats_GetLastError(nullptr) << " (js error " << int(jerr) << ")";

  auto adapter = start_adapter("blocked.log");
  const auto event = publish_event("orders.created", R"({"id":9})");
  // Meanwhile the nodes of the others run what they get, so their subjects have room.
  std::map<std::string, std::vector<std::string>> got;
  auto take = [&](const std::string& fn) {
    for (auto& id : queue(fn).drain_ids(500ms)) got[fn].push_back(std::move(id));
  };
  ASSERT_TRUE(test::eventually(
      [&] {
        take("one-level");
        take("all-orders");
        return counter(scrape(adapter), "fnmesh_events_retried_total") >= 3;
      },
      15s))
      << adapter.log_text();

  // The plug goes; the next redelivery stores the blocked invocation and acks the event.
  EXPECT_TRUE(test::eventually(
      [&] {
        for (const char* fn : {"blocked", "one-level", "all-orders"}) take(fn);
        return counter(scrape(adapter), "fnmesh_events_events_total") == 1;
      },
      10s))
      << adapter.log_text();
  for (const char* fn : {"blocked", "one-level", "all-orders"}) take(fn);
  EXPECT_EQ(got["blocked"],
            (std::vector<std::string>{plug->invocation_id, expected_id(event, "blocked")}));
  for (const char* fn : {"one-level", "all-orders"})
    EXPECT_EQ(got[fn], std::vector<std::string>{expected_id(event, fn)}) << fn;

  const std::string page = scrape(adapter);
  EXPECT_EQ(counter(page, "fnmesh_events_invocations_total"), 3) << page;
  // Each redelivery skipped the two subscribers already stored.
  EXPECT_EQ(counter(page, "fnmesh_events_already_stored_total"),
            2 * counter(page, "fnmesh_events_retried_total")) << page;
  EXPECT_EQ(adapter.stop(10s), 0) << adapter.log_text();
}

TEST_F(events_adapter_binary, events_from_the_npm_nats_client_reach_subscribers_intact) {
  const fs::path node = "/usr/bin/node", npm = test::build_dir() / "npm";
  if (!fs::exists(node) || !fs::exists(npm / "node_modules" / "nats"))
    GTEST_FAIL() << "needs " << node << " and the npm package nats in " << npm
                 << ": run tools/test.sh (it installs both; for another build dir: npm install "
                    "--prefix " << npm.string() << " nats@2)";
  auto adapter = start_adapter("npm.log");
  constexpr int events = 50;
  auto script = test::child_process::spawn(
      {.program = node,
       .args = {(test::source_dir() / "tests/integration/events_publish.mjs").string(),
                npm.string(), nats_->url(), "orders.node", std::to_string(events)},
       .log = dir_ / "node.log"});
  ASSERT_EQ(script.wait(60s), 0) << script.log_text();
  EXPECT_NE(script.log_text().find("published " + std::to_string(events + 1)), std::string::npos)
      << script.log_text();

  // What each subscriber must get: every payload once, bytes and content type as sent.
  std::multiset<std::pair<std::string, std::string>> want;
  for (int i = 0; i < events; ++i)
    want.emplace("js-" + std::to_string(i) + std::string("\0\xff", 2), "application/octet-stream");
  want.emplace("core événement", "text/plain; charset=utf-8");
  for (const std::string fn : {"one-level", "all-orders"}) {
    std::multiset<std::pair<std::string, std::string>> got;
    for (const auto& buffer : drain(fn, 2s)) {
      const auto& inv = invocation(buffer);
      EXPECT_EQ(proto::view(inv.source()), "fnmesh.events.orders.node");
      EXPECT_EQ(inv.trigger(), proto::Trigger::event);
      got.emplace(proto::text(proto::bytes(inv.payload())), proto::view(inv.content_type()));
    }
    EXPECT_EQ(got, want) << fn << "\n" << adapter.log_text();
  }
  EXPECT_TRUE(queue("payments").pull(200ms).empty());
  EXPECT_EQ(adapter.stop(10s), 0);
}

TEST(events_adapter_start, unreachable_nats_is_one_clear_line_and_exit_1) {
  test::temp_dir dir{"events-adapter-unreachable"};
  const std::string url = "nats://127.0.0.1:" + std::to_string(test::free_loopback_port());
  auto adapter = test::child_process::spawn(
      {.program = test::bin("fnmesh-events"), .args = {"--nats", url}, .log = dir.path() / "log"});
  EXPECT_EQ(adapter.wait(15s), 1);
  const std::string text = adapter.log_text();
  EXPECT_TRUE(text.starts_with("fnmesh-events: cannot reach NATS at " + url)) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
}

TEST(events_adapter_start, a_mesh_not_bootstrapped_is_one_clear_line_and_exit_1) {
  test::temp_dir dir{"events-adapter-bare"};
  test::nats_server bare;
  auto adapter = test::child_process::spawn({.program = test::bin("fnmesh-events"),
                                             .args = {"--nats", bare.url()},
                                             .log = dir.path() / "log"});
  EXPECT_EQ(adapter.wait(15s), 1);
  const std::string text = adapter.log_text();
  EXPECT_NE(text.find("is the mesh bootstrapped"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
}

}  // namespace
}  // namespace fnmesh
