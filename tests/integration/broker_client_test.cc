// broker/client against a real nats-server: topology, KV, registry, invoker, pull requests,
// code bundles. Each test starts its own server on an ephemeral port.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <set>
#include <mutex>

#include "broker/client/code_bundle.h"
#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "broker/client/kv.h"
#include "broker/client/pull_requests.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "common/errc.h"
#include "common/ulid.h"
#include "tests/support/function_spec.h"
#include "tests/support/nats_server.h"

namespace fnmesh::broker {
namespace {

using namespace std::chrono_literals;

// A queue the nats.c threads push into and the test pops from, with a timeout.
template <class T>
class waiter {
 public:
  void push(T v) {
    std::lock_guard lock(mutex_);
    items_.push_back(std::move(v));
    cv_.notify_all();
  }
  std::optional<T> pop(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return !items_.empty(); })) return std::nullopt;
    T v = std::move(items_.front());
    items_.pop_front();
    return v;
  }
  size_t size() {
    std::lock_guard lock(mutex_);
    return items_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<T> items_;
};

struct ended {
  uint64_t id;
  uint32_t undelivered;
  int status;
};

std::vector<uint8_t> make_spec(std::string_view tenant, std::string_view name,
                               uint32_t timeout_s = 3, uint32_t retries = 2,
                               uint32_t concurrency = 0, std::string_view version = "v1") {
  return test::encode_spec({.name = std::string(name),
                            .tenant = std::string(tenant),
                            .version = std::string(version),
                            .timeout_s = timeout_s,
                            .retries = retries,
                            .concurrency = concurrency});
}

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

uint64_t stream_messages(connection& conn, std::string_view stream) {
  jsStreamInfo* si = nullptr;
  std::string name(stream);
  if (js_GetStreamInfo(&si, conn.js(), name.c_str(), nullptr, nullptr) != NATS_OK) return ~0ull;
  uint64_t n = si->State.Msgs;
  jsStreamInfo_Destroy(si);
  return n;
}

class broker_client : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<test::nats_server>();
    auto c = connection::connect({.urls = server_->url(), .name = "broker-client-test"});
    ASSERT_TRUE(c) << c.error().message();
    conn_ = std::move(*c);
    ASSERT_TRUE(bootstrap(*conn_));
  }
  void TearDown() override {
    conn_.reset();
    server_.reset();
  }

  // Deploys a spec the way `fnmesh deploy` does: KV put + its consumer.
  void deploy(std::string_view tenant, std::string_view name, uint32_t timeout_s = 3,
              uint32_t retries = 2) {
    ASSERT_TRUE(test::deploy_spec(*conn_, make_spec(tenant, name, timeout_s, retries)));
  }

  std::unique_ptr<test::nats_server> server_;
  std::unique_ptr<connection> conn_;
};

TEST_F(broker_client, bootstrap_is_idempotent_and_creates_every_object) {
  ASSERT_TRUE(bootstrap(*conn_));
  ASSERT_TRUE(bootstrap(*conn_));
  jsStreamInfo* si = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&si, conn_->js(), "FNMESH_INVOKE", nullptr, nullptr), NATS_OK);
  EXPECT_EQ(si->Config->Retention, js_WorkQueuePolicy);
  EXPECT_EQ(si->Config->Storage, js_FileStorage);
  EXPECT_EQ(si->Config->Duplicates, 120'000'000'000ll);
  EXPECT_GE(si->Config->MaxMsgSize, int32_t(6 << 20));
  jsStreamInfo_Destroy(si);
  for (auto stream : {"FNMESH_EVENTS", "FNMESH_DLQ"}) {
    si = nullptr;
    EXPECT_EQ(js_GetStreamInfo(&si, conn_->js(), stream, nullptr, nullptr), NATS_OK) << stream;
    if (si) jsStreamInfo_Destroy(si);
  }
  for (auto bucket : {functions_bucket, code_bucket, nodes_bucket})
    EXPECT_TRUE(kv_bucket::open(*conn_, bucket)) << bucket;
  // A second process bootstrapping against the same server is fine too.
  auto other = connection::connect({.urls = server_->url()});
  ASSERT_TRUE(other);
  EXPECT_TRUE(bootstrap(**other));
}

TEST_F(broker_client, connect_failure_names_the_url) {
  const std::string url = server_->url();
  server_->stop();
  auto c = connection::connect({.urls = url, .timeout = 500ms, .reconnect = false});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("cannot reach NATS at " + url + ": "), std::string::npos)
      << c.error().message();
}

TEST_F(broker_client, fixture_restarts_on_the_same_port_and_keeps_the_store) {
  const std::string url = server_->url();
  conn_.reset();
  server_->kill();
  server_->restart();
  EXPECT_EQ(server_->url(), url);
  auto c = connection::connect({.urls = url});
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_TRUE(kv_bucket::open(**c, functions_bucket));
}

TEST_F(broker_client, kv_put_get_keys_erase_and_watch) {
  auto bucket = kv_bucket::open(*conn_, functions_bucket);
  ASSERT_TRUE(bucket);
  auto& kv = **bucket;
  ASSERT_TRUE(kv.put("t.a", as_bytes("one")));
  auto got = kv.get("t.a");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(proto::text(**got), "one");
  auto missing = kv.get("t.nothing");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(*missing);

  waiter<std::pair<std::string, std::optional<std::string>>> changes;
  std::atomic<bool> initial_done{false};
  ASSERT_TRUE(kv.watch_all(
      [&](const std::string& key, std::optional<std::span<const uint8_t>> value) {
        changes.push({key, value ? std::optional<std::string>(std::string(proto::text(*value)))
                                 : std::nullopt});
      },
      [&] { initial_done = true; }));
  auto first = changes.pop();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->first, "t.a");
  EXPECT_EQ(first->second, "one");
  for (int i = 0; i < 200 && !initial_done; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(initial_done);

  ASSERT_TRUE(kv.put("t.b", as_bytes("two")));
  auto second = changes.pop();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->first, "t.b");
  EXPECT_EQ(second->second, "two");

  auto keys = kv.keys();
  ASSERT_TRUE(keys);
  std::sort(keys->begin(), keys->end());
  EXPECT_EQ(*keys, (std::vector<std::string>{"t.a", "t.b"}));

  ASSERT_TRUE(kv.erase("t.a"));
  ASSERT_TRUE(kv.erase("t.never-existed"));
  auto third = changes.pop();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->first, "t.a");
  EXPECT_FALSE(third->second);
  auto after = kv.get("t.a");
  ASSERT_TRUE(after);
  EXPECT_FALSE(*after);
}

TEST_F(broker_client, kv_watch_on_an_empty_bucket_reports_initial_done) {
  auto bucket = kv_bucket::open(*conn_, nodes_bucket);
  ASSERT_TRUE(bucket);
  waiter<int> done;
  ASSERT_TRUE((*bucket)->watch_all([](auto&&, auto&&) {}, [&] { done.push(1); }));
  EXPECT_TRUE(done.pop(3s));
}

TEST_F(broker_client, registry_sees_puts_and_deletes_and_ignores_garbage) {
  deploy("default", "alpha");
  waiter<std::pair<std::string, bool>> changes;
  auto reg = function_registry::open(*conn_, [&](const std::string& key, function_ptr rec) {
    changes.push({key, rec != nullptr});
  });
  ASSERT_TRUE(reg) << reg.error().message();
  auto& registry = **reg;
  // open() returns with the initial contents loaded.
  auto alpha = registry.find("default", "alpha");
  ASSERT_TRUE(alpha);
  EXPECT_EQ(proto::view(alpha->spec().name()), "alpha");
  EXPECT_EQ(registry.all().size(), 1u);
  EXPECT_FALSE(registry.find("default", "beta"));

  auto bucket = kv_bucket::open(*conn_, functions_bucket);
  ASSERT_TRUE(bucket);
  ASSERT_TRUE((*bucket)->put("default.junk", as_bytes("this is not a flatbuffer")));
  ASSERT_TRUE((*bucket)->put("default.beta", make_spec("default", "beta")));
  std::optional<std::pair<std::string, bool>> c;
  do c = changes.pop(); while (c && c->first == "default.alpha");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, std::make_pair(std::string("default.beta"), true));
  EXPECT_TRUE(registry.find("default", "beta"));
  EXPECT_FALSE(registry.find("default", "junk"));

  ASSERT_TRUE((*bucket)->erase("default.alpha"));
  c = changes.pop();
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, std::make_pair(std::string("default.alpha"), false));
  EXPECT_FALSE(registry.find("default", "alpha"));
  EXPECT_EQ(registry.all().size(), 1u);
}

TEST_F(broker_client, a_subscriber_hears_what_is_loaded_then_each_change) {
  deploy("default", "alpha");
  deploy("default", "beta");
  auto reg = function_registry::open(*conn_);
  ASSERT_TRUE(reg) << reg.error().message();
  waiter<std::pair<std::string, bool>> changes;
  (*reg)->subscribe([&](const std::string& key, function_ptr rec) { changes.push({key, rec != nullptr}); });
  std::set<std::string> loaded;
  for (int i = 0; i < 2; ++i)
    if (auto c = changes.pop()) loaded.insert(c->first);
  EXPECT_EQ(loaded, (std::set<std::string>{"default.alpha", "default.beta"}));
  deploy("default", "gamma");
  auto c = changes.pop();
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, std::make_pair(std::string("default.gamma"), true));
}

TEST_F(broker_client, registry_keeps_following_after_the_server_restarts) {
  deploy("default", "alpha");
  deploy("default", "gone");
  auto c = connection::connect({.urls = server_->url(), .name = "registry-restart"});
  ASSERT_TRUE(c);
  waiter<std::pair<std::string, bool>> changes;
  auto reg = function_registry::open(**c, [&](const std::string& key, function_ptr rec) {
    changes.push({key, rec != nullptr});
  });
  ASSERT_TRUE(reg);
  ASSERT_TRUE((*reg)->find("default", "gone"));
  while (changes.pop(200ms)) {
  }

  conn_.reset();
  server_->kill();
  server_->restart();
  auto writer = connection::connect({.urls = server_->url(), .name = "writer"});
  ASSERT_TRUE(writer);
  auto bucket = kv_bucket::open(**writer, functions_bucket);
  ASSERT_TRUE(bucket);
  ASSERT_TRUE((*bucket)->erase("default.gone"));
  ASSERT_TRUE((*bucket)->put("default.beta", make_spec("default", "beta")));

  for (int i = 0; i < 200 && !((*reg)->find("default", "beta") && !(*reg)->find("default", "gone")); ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_TRUE((*reg)->find("default", "beta"));
  EXPECT_FALSE((*reg)->find("default", "gone"));
  EXPECT_TRUE((*reg)->find("default", "alpha"));
}

TEST_F(broker_client, invoker_refuses_bad_input_and_publishes_once_per_id) {
  deploy("default", "echo");
  auto reg = function_registry::open(*conn_);
  ASSERT_TRUE(reg);
  invoker with_registry(*conn_, reg->get());
  invoker with_kv(*conn_, nullptr);

  for (invoker* inv : {&with_registry, &with_kv}) {
    invocation_request unknown;
    unknown.function = "nope";
    auto r = inv->invoke(unknown);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), make_error_code(errc::not_found));

    invocation_request bad_name;
    bad_name.function = "Bad.Name";
    r = inv->invoke(bad_name);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), make_error_code(errc::invalid_argument));

    std::vector<uint8_t> big(inv->payload_limits().async_payload + 1, 'x');
    invocation_request too_big;
    too_big.function = "echo";
    too_big.payload = big;
    r = inv->invoke(too_big);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), make_error_code(errc::too_large));
    // The same size is fine for a sync call; one byte over its own limit is not.
    too_big.reply_endpoint = "tcp://127.0.0.1:1";
    std::vector<uint8_t> sync_big(inv->payload_limits().sync_payload + 1, 'x');
    too_big.payload = sync_big;
    r = inv->invoke(too_big);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), make_error_code(errc::too_large));
  }
  EXPECT_EQ(stream_messages(*conn_, invoke_stream), 0u);

  invocation_request ok;
  ok.function = "echo";
  ok.payload = as_bytes("{\"n\":1}");
  auto first = with_registry.invoke(ok);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_TRUE(is_ulid(first->invocation_id));
  EXPECT_EQ(stream_messages(*conn_, invoke_stream), 1u);

  // A retried publish of the same invocation is stored once (Nats-Msg-Id).
  ok.invocation_id = first->invocation_id;
  ASSERT_TRUE(with_kv.invoke(ok));
  ASSERT_TRUE(with_registry.invoke(ok, /*async_publish=*/true));
  ASSERT_TRUE(conn_->js_publish_async_complete(2s));
  EXPECT_EQ(stream_messages(*conn_, invoke_stream), 1u);

  // A sync payload right at the limit (6 MiB) fits through the stream and server limits.
  std::vector<uint8_t> at_limit(with_registry.payload_limits().sync_payload, 'y');
  invocation_request sync_req;
  sync_req.function = "echo";
  sync_req.payload = at_limit;
  sync_req.reply_endpoint = "tcp://127.0.0.1:5555";
  auto big_ok = with_registry.invoke(sync_req);
  ASSERT_TRUE(big_ok) << big_ok.error().message();
  EXPECT_EQ(stream_messages(*conn_, invoke_stream), 2u);
}

class pulling : public broker_client {
 protected:
  void SetUp() override {
    broker_client::SetUp();
    auto p = pull_requests::open(
        *conn_, std::string(invoke_stream), [this](delivery&& d) { deliveries_.push(std::move(d)); },
        [this](uint64_t id, uint32_t undelivered, int status) {
          ends_.push({id, undelivered, status});
        });
    ASSERT_TRUE(p);
    pulls_ = std::move(*p);
  }
  void TearDown() override {
    pulls_.reset();
    broker_client::TearDown();
  }
  waiter<delivery> deliveries_;
  waiter<ended> ends_;
  std::unique_ptr<pull_requests> pulls_;
};

TEST_F(pulling, delivers_then_redelivers_after_nak_then_ack_removes) {
  deploy("default", "echo");
  auto reg = function_registry::open(*conn_);
  ASSERT_TRUE(reg);
  invoker inv(*conn_, reg->get());
  invocation_request req;
  req.function = "echo";
  req.payload = as_bytes("hello");
  req.reply_endpoint = "tcp://127.0.0.1:7000";
  req.correlation = 42;
  req.trigger = proto::Trigger::http;
  auto pub = inv.invoke(req);
  ASSERT_TRUE(pub);

  auto id = pulls_->request(consumer_name("default", "echo"), 1, 2s);
  ASSERT_TRUE(id);
  auto d = deliveries_.pop();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->request_id, *id);
  EXPECT_EQ(d->consumer, "fn_default_echo");
  EXPECT_EQ(d->delivered, 1u);
  EXPECT_EQ(d->stream_seq, 1u);
  const auto* invocation = proto::verified<proto::Invocation>(d->data());
  ASSERT_NE(invocation, nullptr);
  EXPECT_EQ(proto::view(invocation->id()), pub->invocation_id);
  EXPECT_EQ(proto::view(invocation->function()), "echo");
  EXPECT_EQ(proto::view(invocation->tenant()), "default");
  EXPECT_EQ(proto::view(invocation->version()), "v1");
  EXPECT_EQ(proto::text(proto::bytes(invocation->payload())), "hello");
  EXPECT_EQ(invocation->trigger(), proto::Trigger::http);
  ASSERT_NE(invocation->reply(), nullptr);
  EXPECT_EQ(proto::view(invocation->reply()->endpoint()), "tcp://127.0.0.1:7000");
  EXPECT_EQ(invocation->reply()->correlation(), 42u);
  EXPECT_GT(invocation->deadline_ns(), invocation->published_ns());
  auto e = ends_.pop();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->id, *id);
  EXPECT_EQ(e->undelivered, 0u);
  EXPECT_EQ(e->status, 0);

  ASSERT_TRUE(d->in_progress(*conn_));
  ASSERT_TRUE(d->nak(*conn_));
  auto id2 = pulls_->request(consumer_name("default", "echo"), 1, 2s);
  ASSERT_TRUE(id2);
  auto again = deliveries_.pop();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->request_id, *id2);
  EXPECT_EQ(again->delivered, 2u);
  EXPECT_EQ(again->stream_seq, 1u);
  ASSERT_TRUE(again->ack(*conn_));
  ASSERT_TRUE(conn_->flush());
  // Work queue: an acked invocation is gone.
  for (int i = 0; i < 100 && stream_messages(*conn_, invoke_stream) != 0; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(stream_messages(*conn_, invoke_stream), 0u);
  EXPECT_EQ(pulls_->outstanding(), 0u);
}

TEST_F(pulling, expired_request_reports_what_never_came) {
  deploy("default", "echo");
  invoker inv(*conn_, nullptr);
  invocation_request req;
  req.function = "echo";
  ASSERT_TRUE(inv.invoke(req));

  auto id = pulls_->request(consumer_name("default", "echo"), 3, 300ms);
  ASSERT_TRUE(id);
  auto d = deliveries_.pop();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->request_id, *id);
  auto e = ends_.pop(3s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->id, *id);
  EXPECT_EQ(e->undelivered, 2u);
  EXPECT_EQ(e->status, 408);
  EXPECT_EQ(pulls_->outstanding(), 0u);
  ASSERT_TRUE(d->ack(*conn_));
}

TEST_F(pulling, one_object_pulls_several_consumers) {
  deploy("default", "first");
  deploy("acme", "second");
  invoker inv(*conn_, nullptr);
  invocation_request a;
  a.function = "first";
  a.payload = as_bytes("A");
  invocation_request b;
  b.tenant = "acme";
  b.function = "second";
  b.payload = as_bytes("B");
  ASSERT_TRUE(inv.invoke(a));
  ASSERT_TRUE(inv.invoke(b));
  ASSERT_TRUE(inv.invoke(b));

  auto r1 = pulls_->request(consumer_name("default", "first"), 5, 500ms);
  auto r2 = pulls_->request(consumer_name("acme", "second"), 5, 500ms);
  ASSERT_TRUE(r1 && r2);
  std::map<std::string, std::vector<std::string>> got;
  for (int i = 0; i < 3; ++i) {
    auto d = deliveries_.pop();
    ASSERT_TRUE(d);
    EXPECT_EQ(d->request_id, d->consumer == "fn_default_first" ? *r1 : *r2);
    auto* inv_msg = proto::verified<proto::Invocation>(d->data());
    ASSERT_NE(inv_msg, nullptr);
    got[d->consumer].emplace_back(proto::text(proto::bytes(inv_msg->payload())));
    ASSERT_TRUE(d->ack(*conn_));
  }
  EXPECT_EQ(got["fn_default_first"], std::vector<std::string>{"A"});
  EXPECT_EQ(got["fn_acme_second"], (std::vector<std::string>{"B", "B"}));
  std::map<uint64_t, ended> ends;
  for (int i = 0; i < 2; ++i) {
    auto e = ends_.pop(3s);
    ASSERT_TRUE(e);
    ends[e->id] = *e;
  }
  EXPECT_EQ(ends[*r1].undelivered, 4u);
  EXPECT_EQ(ends[*r2].undelivered, 3u);
}

TEST_F(pulling, several_waiting_requests_on_one_consumer_are_each_served_once) {
  deploy("default", "echo");
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    auto id = pulls_->request(consumer_name("default", "echo"), 1, 3s);
    ASSERT_TRUE(id);
    ids.push_back(*id);
  }
  ASSERT_TRUE(conn_->flush());
  invoker inv(*conn_, nullptr);
  invocation_request req;
  req.function = "echo";
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(inv.invoke(req));
  std::set<uint64_t> served;
  for (int i = 0; i < 4; ++i) {
    auto d = deliveries_.pop();
    ASSERT_TRUE(d);
    served.insert(d->request_id);
    ASSERT_TRUE(d->ack(*conn_));
  }
  EXPECT_EQ(served, std::set<uint64_t>(ids.begin(), ids.end()));
  for (int i = 0; i < 4; ++i) {
    auto e = ends_.pop();
    ASSERT_TRUE(e);
    EXPECT_EQ(e->undelivered, 0u);
  }
}

TEST_F(pulling, waiting_batches_are_served_round_robin_as_the_server_does) {
  deploy("default", "echo");
  auto a = pulls_->request(consumer_name("default", "echo"), 3, 600ms);
  auto b = pulls_->request(consumer_name("default", "echo"), 3, 700ms);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(conn_->flush());
  invoker inv(*conn_, nullptr);
  invocation_request req;
  req.function = "echo";
  ASSERT_TRUE(inv.invoke(req));
  ASSERT_TRUE(inv.invoke(req));
  auto d1 = deliveries_.pop();
  auto d2 = deliveries_.pop();
  ASSERT_TRUE(d1 && d2);
  EXPECT_EQ(d1->request_id, *a);
  EXPECT_EQ(d2->request_id, *b);
  // nats-server reports Nats-Pending-Messages 2 for each: the local count agrees.
  for (int i = 0; i < 2; ++i) {
    auto e = ends_.pop(3s);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->undelivered, 2u);
    EXPECT_EQ(e->status, 408);
  }
}

TEST_F(pulling, a_request_for_a_missing_consumer_ends_with_503) {
  auto id = pulls_->request("fn_default_missing", 2, 200ms);
  ASSERT_TRUE(id);
  auto e = ends_.pop(5s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->id, *id);
  EXPECT_EQ(e->undelivered, 2u);
  EXPECT_EQ(e->status, 503);
}

TEST_F(pulling, a_waiting_request_is_lost_when_its_server_goes_and_a_new_one_is_served) {
  deploy("default", "echo");
  auto id = pulls_->request(consumer_name("default", "echo"), 1, 30s);
  ASSERT_TRUE(id);
  server_->kill();  // the waiting request dies with the server
  server_->restart();
  auto e = ends_.pop(10s);  // at the reconnect, not 30 s later
  ASSERT_TRUE(e);
  EXPECT_EQ(e->id, *id);
  EXPECT_EQ(e->undelivered, 1u);
  EXPECT_EQ(e->status, pull_requests::lost);
  EXPECT_EQ(pulls_->outstanding(), 0u);

  std::optional<uint64_t> again;
  for (int i = 0; i < 50 && !again; ++i) {  // JetStream recovers its store after the restart
    if (auto r = pulls_->request(consumer_name("default", "echo"), 1, 5s)) again = *r;
    else std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(again);
  invoker inv(*conn_, nullptr);
  invocation_request req;
  req.function = "echo";
  std::optional<published> pub;
  for (int i = 0; i < 50 && !pub; ++i) {
    if (auto r = inv.invoke(req)) pub = *r;
    else std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(pub);
  auto d = deliveries_.pop(5s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->request_id, *again);
  EXPECT_TRUE(d->ack(*conn_));
}

TEST_F(broker_client, consumer_follows_the_spec_and_removal_is_idempotent) {
  auto spec = make_spec("default", "slow", 10, 4, 3);
  const auto& s = *flatbuffers::GetRoot<proto::FunctionSpec>(spec.data());
  ASSERT_TRUE(ensure_function_consumer(*conn_, s));
  ASSERT_TRUE(ensure_function_consumer(*conn_, s));
  jsConsumerInfo* ci = nullptr;
  ASSERT_EQ(js_GetConsumerInfo(&ci, conn_->js(), "FNMESH_INVOKE", "fn_default_slow", nullptr,
                               nullptr),
            NATS_OK);
  EXPECT_EQ(ci->Config->AckWait, 15'000'000'000ll);
  EXPECT_EQ(ci->Config->MaxDeliver, -1);  // nodes retry by publishing the next attempt
  EXPECT_EQ(ci->Config->MaxAckPending, 3);
  EXPECT_EQ(ci->Config->AckPolicy, js_AckExplicit);
  EXPECT_STREQ(ci->Config->FilterSubject, "fnmesh.invoke.default.slow");
  jsConsumerInfo_Destroy(ci);

  auto changed = make_spec("default", "slow", 20, 4, 3);
  ASSERT_TRUE(ensure_function_consumer(*conn_, *flatbuffers::GetRoot<proto::FunctionSpec>(changed.data())));
  ci = nullptr;
  ASSERT_EQ(js_GetConsumerInfo(&ci, conn_->js(), "FNMESH_INVOKE", "fn_default_slow", nullptr,
                               nullptr),
            NATS_OK);
  EXPECT_EQ(ci->Config->AckWait, 25'000'000'000ll);
  jsConsumerInfo_Destroy(ci);

  // A long timeout is capped: a dead node's invocations move on within max_ack_wait.
  auto long_run = make_spec("default", "slow", 600, 4, 3);
  ASSERT_TRUE(ensure_function_consumer(*conn_, *flatbuffers::GetRoot<proto::FunctionSpec>(long_run.data())));
  ci = nullptr;
  ASSERT_EQ(js_GetConsumerInfo(&ci, conn_->js(), "FNMESH_INVOKE", "fn_default_slow", nullptr,
                               nullptr),
            NATS_OK);
  EXPECT_EQ(ci->Config->AckWait, std::chrono::nanoseconds(max_ack_wait).count());
  jsConsumerInfo_Destroy(ci);

  EXPECT_TRUE(remove_function_consumer(*conn_, "default", "slow"));
  EXPECT_TRUE(remove_function_consumer(*conn_, "default", "slow"));
  ci = nullptr;
  EXPECT_NE(js_GetConsumerInfo(&ci, conn_->js(), "FNMESH_INVOKE", "fn_default_slow", nullptr,
                               nullptr),
            NATS_OK);
  if (ci) jsConsumerInfo_Destroy(ci);
}

TEST_F(broker_client, code_bundles_round_trip_through_kv_in_chunks) {
  test::temp_dir src("fnmesh-bundle-src");
  std::ofstream(src / "handler.py") << "def handle(event, ctx):\n    return event\n";
  std::string blob(1'300'000, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = char((i * 2654435761u) >> 13);
  std::ofstream(src / "model.bin", std::ios::binary) << blob;
  auto packed = pack_folder(src.path());
  ASSERT_TRUE(packed);
  ASSERT_GT(packed->buffer.size(), 2 * chunk_bytes);

  auto code = kv_bucket::open(*conn_, code_bucket);
  ASSERT_TRUE(code);
  ASSERT_TRUE(store_bundle(**code, *packed));
  ASSERT_TRUE(store_bundle(**code, *packed));  // idempotent
  auto loaded = load_bundle(**code, packed->digest);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(*loaded, packed->buffer);

  auto missing = load_bundle(**code, std::string(64, '0'));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), make_error_code(errc::not_found));

  // A corrupted chunk is caught by the digest check.
  ASSERT_TRUE((*code)->put(packed->digest + ".1", as_bytes("garbage")));
  auto corrupt = load_bundle(**code, packed->digest);
  ASSERT_FALSE(corrupt);
  EXPECT_EQ(corrupt.error(), make_error_code(errc::malformed));
}

// Three clustered servers: replicated topology, and work survives losing one server.
TEST(broker_cluster, replicated_topology_survives_one_server_down) {
  test::nats_cluster cluster;
  auto c = connection::connect({.urls = cluster.urls(), .name = "cluster-test"});
  ASSERT_TRUE(c) << c.error().message();
  auto& conn = **c;
  const topology_options three{.replicas = 3};
  ASSERT_TRUE(bootstrap(conn));  // three servers known: 3 replicas by default
  ASSERT_TRUE(bootstrap(conn, three));
  jsStreamInfo* si = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&si, conn.js(), "FNMESH_INVOKE", nullptr, nullptr), NATS_OK);
  EXPECT_EQ(si->Config->Replicas, 3);
  jsStreamInfo_Destroy(si);

  auto bucket = kv_bucket::open(conn, functions_bucket);
  ASSERT_TRUE(bucket);
  auto spec = make_spec("default", "echo");
  ASSERT_TRUE((*bucket)->put("default.echo", spec));
  ASSERT_TRUE(ensure_function_consumer(conn, *flatbuffers::GetRoot<proto::FunctionSpec>(spec.data()), three));
  invoker inv(conn, nullptr);
  invocation_request req;
  req.function = "echo";
  req.payload = as_bytes("survives");
  auto pub = inv.invoke(req);
  ASSERT_TRUE(pub) << pub.error().message();

  // Lose one server; the others keep the stream, the consumer and the connection.
  cluster.server(0).kill();
  ASSERT_TRUE(test::nats_cluster::wait_jetstream(cluster.server(1).url(), 30s));

  waiter<delivery> deliveries;
  auto pulls = pull_requests::open(
      conn, std::string(invoke_stream), [&](delivery&& d) { deliveries.push(std::move(d)); },
      [](uint64_t, uint32_t, int) {});
  ASSERT_TRUE(pulls);
  std::optional<delivery> d;
  for (int attempt = 0; attempt < 20 && !d; ++attempt) {
    ASSERT_TRUE((*pulls)->request(consumer_name("default", "echo"), 1, 1s));
    d = deliveries.pop(3s);
  }
  ASSERT_TRUE(d);
  const auto* got = proto::verified<proto::Invocation>(d->data());
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(proto::view(got->id()), pub->invocation_id);
  EXPECT_TRUE(d->ack(conn));

  cluster.server(0).restart();
  EXPECT_TRUE(test::nats_cluster::wait_jetstream(cluster.server(0).url(), 30s));
}

}  // namespace
}  // namespace fnmesh::broker
