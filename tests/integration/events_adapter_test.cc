// fnmesh-events as a user meets it: the real binary against a real nats-server. Events
// published on fnmesh.events.<subject> must invoke each subscribed function exactly once,
// across adapter restarts.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <csignal>
#include <set>
#include <thread>

#include "broker/client/connection.h"
#include "broker/client/kv.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "flatbuffers/proto.h"
#include "tests/support/child_process.h"
#include "tests/support/function_spec.h"
#include "tests/support/mesh.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "broker/client/event_id.h"

namespace fnmesh {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct stored_event {
  uint64_t seq = 0;
  int64_t stored_ns = 0;
};

class events_adapter_binary : public ::testing::Test {
 protected:
  void SetUp() override {
    nats_ = std::make_unique<test::nats_server>();
    auto c = broker::connection::connect({.urls = nats_->url(), .name = "events-adapter-test"});
    ASSERT_TRUE(c) << c.error().message();
    conn_ = std::move(*c);
    ASSERT_TRUE(broker::bootstrap(*conn_));
    const std::pair<const char*, std::vector<std::string>> specs[] = {
        {"one-level", {"orders.*"}},
        {"all-orders", {"payments.*", "orders.>"}},
        {"payments", {"payments.*"}},
    };
    for (const auto& [name, patterns] : specs)
      ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = name,
                                                               .runtime = proto::Runtime::exec,
                                                               .handler = "./run",
                                                               .events = patterns})));
  }

  void TearDown() override {
    for (auto& [name, sub] : subs_) natsSubscription_Destroy(sub);
  }

  test::child_process start_adapter(const std::string& log) {
    auto p = test::child_process::spawn(
        {.program = test::bin("fnmesh-events"),
         .args = {"--nats", nats_->url(), "--log-level", "debug"},
         .log = dir_ / log});
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

  // Every invocation that reaches the function's consumer within `wait` (acked).
  std::vector<std::vector<uint8_t>> pull_all(std::string_view function,
                                             std::chrono::milliseconds wait = 2s) {
    const std::string consumer = broker::consumer_name("default", function);
    auto& sub = subs_[consumer];
    if (!sub) {
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = broker::invoke_stream.data();
      so.Consumer = consumer.c_str();
      EXPECT_EQ(js_PullSubscribe(&sub, conn_->js(),
                                 broker::invoke_subject("default", function).c_str(),
                                 consumer.c_str(), nullptr, &so, nullptr),
                NATS_OK);
    }
    std::vector<std::vector<uint8_t>> out;
    const auto until = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < until) {
      natsMsgList list{};
      if (natsSubscription_Fetch(&list, sub, 16, 200, nullptr) != NATS_OK) continue;
      for (int i = 0; i < list.Count; ++i) {
        auto* m = list.Msgs[i];
        auto* p = reinterpret_cast<const uint8_t*>(natsMsg_GetData(m));
        out.emplace_back(p, p + natsMsg_GetDataLength(m));
        natsMsg_AckSync(m, nullptr, nullptr);
      }
      natsMsgList_Destroy(&list);
    }
    return out;
  }

  // Pulls until nothing new arrives for `idle`; returns the invocation ids seen, in order.
  std::vector<std::string> drain_ids(std::string_view function, std::chrono::milliseconds idle) {
    std::vector<std::string> ids;
    for (;;) {
      auto got = pull_all(function, idle);
      if (got.empty()) return ids;
      for (const auto& data : got) {
        auto* inv = proto::verified<proto::Invocation>(data);
        EXPECT_NE(inv, nullptr);
        if (inv) ids.emplace_back(proto::view(inv->id()));
      }
    }
  }

  test::temp_dir dir_{"events-adapter"};
  std::unique_ptr<test::nats_server> nats_;
  std::unique_ptr<broker::connection> conn_;
  std::map<std::string, natsSubscription*> subs_;
};

TEST_F(events_adapter_binary, one_event_invokes_each_subscriber_once_and_never_again_after_restart) {
  auto adapter = start_adapter("first.log");
  const auto event = publish_event("orders.created", R"({"id":7})");
  ASSERT_GT(event.seq, 0u);

  for (const char* fn : {"one-level", "all-orders"}) {
    auto got = pull_all(fn);
    ASSERT_EQ(got.size(), 1u) << fn << "\n" << adapter.log_text();
    auto* inv = proto::verified<proto::Invocation>(got[0]);
    ASSERT_NE(inv, nullptr);
    EXPECT_EQ(proto::view(inv->function()), fn);
    EXPECT_EQ(inv->trigger(), proto::Trigger::event);
    EXPECT_EQ(proto::view(inv->source()), "fnmesh.events.orders.created");
    EXPECT_EQ(proto::text(proto::bytes(inv->payload())), R"({"id":7})");
    EXPECT_EQ(proto::view(inv->content_type()), "application/json");
    EXPECT_EQ(inv->reply(), nullptr);
    // The id a redelivery would publish again: derived from the stored event.
    EXPECT_EQ(proto::view(inv->id()),
              broker::event_invocation_id(event.stored_ns, event.seq,
                                                  broker::function_key("default", fn)));
  }
  EXPECT_TRUE(pull_all("payments", 500ms).empty());
  EXPECT_EQ(adapter.stop(10s), 0) << adapter.log_text();
  EXPECT_NE(adapter.log_text().find("stopped: 1 events, 2 invocations"), std::string::npos)
      << adapter.log_text();

  // Restarted: the acked event is not taken again; only the new one is dispatched.
  auto again = start_adapter("second.log");
  const auto second = publish_event("payments.settled", "plain text");
  auto payments = pull_all("payments");
  ASSERT_EQ(payments.size(), 1u) << again.log_text();
  auto* inv = proto::verified<proto::Invocation>(payments[0]);
  ASSERT_NE(inv, nullptr);
  EXPECT_EQ(proto::view(inv->id()),
            broker::event_invocation_id(second.stored_ns, second.seq,
                                                "default.payments"));
  EXPECT_EQ(pull_all("all-orders").size(), 1u);  // payments.* matches it too, once
  EXPECT_TRUE(pull_all("one-level", 500ms).empty());
  EXPECT_EQ(again.stop(10s), 0) << again.log_text();
  EXPECT_NE(again.log_text().find("stopped: 1 events, 2 invocations"), std::string::npos)
      << again.log_text();
}

TEST_F(events_adapter_binary, events_published_before_the_first_start_are_not_lost) {
  publish_event("orders.created", "{}");
  auto adapter = start_adapter("late.log");
  EXPECT_EQ(pull_all("one-level").size(), 1u) << adapter.log_text();
  EXPECT_EQ(pull_all("all-orders").size(), 1u);
  EXPECT_EQ(adapter.stop(10s), 0);
}

TEST_F(events_adapter_binary, unmatched_events_are_acked_and_counted) {
  auto adapter = start_adapter("unmatched.log");
  publish_event("nobody.listens", "{}");
  EXPECT_TRUE(pull_all("one-level", 1s).empty());
  EXPECT_TRUE(pull_all("all-orders", 200ms).empty());
  EXPECT_TRUE(pull_all("payments", 200ms).empty());
  EXPECT_EQ(adapter.stop(10s), 0);
  EXPECT_NE(adapter.log_text().find("1 unmatched"), std::string::npos) << adapter.log_text();
}

}  // namespace
}  // namespace fnmesh

namespace fnmesh {
namespace {

TEST_F(events_adapter_binary, killed_mid_stream_and_restarted_every_subscriber_gets_each_event_once) {
  constexpr int events = 1500;
  for (int i = 0; i < events; ++i)
    publish_event("orders.created", "{\"n\":" + std::to_string(i) + "}");
  auto adapter = test::child_process::spawn(
      {.program = test::bin("fnmesh-events"),
       .args = {"--nats", nats_->url(), "--batch", "16", "--ack-wait", "2"},
       .log = dir_ / "killed.log"});
  ASSERT_TRUE(adapter.wait_for_log("consuming", 10s)) << adapter.log_text();
  std::this_thread::sleep_for(300ms);
  adapter.signal(SIGKILL);  // between publishing invocations and acking their events
  adapter.wait(5s);

  auto again = start_adapter("after-kill.log");
  for (const char* fn : {"one-level", "all-orders"}) {
    auto ids = drain_ids(fn, 3s);
    std::set<std::string> unique(ids.begin(), ids.end());
    EXPECT_EQ(unique.size(), size_t(events)) << fn;  // none lost
    EXPECT_EQ(ids.size(), size_t(events)) << fn;     // none twice
  }
  EXPECT_EQ(again.stop(10s), 0);
}

}  // namespace
}  // namespace fnmesh
