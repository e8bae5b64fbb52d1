// The real fnmesh-collector on ephemeral loopback ports, driven over ZeroMQ as a node
// drives it, its totals read over its HTTP API.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "broker/client/collector_client.h"
#include "broker/client/reply_router.h"
#include "common/errc.h"
#include "flatbuffers/proto.h"
#include "tests/support/child_process.h"
#include "tests/support/http_exchange.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
using namespace std::chrono_literals;
using fnmesh::broker::collector_client;
using fnmesh::broker::collector_reply;

namespace {

fs::path collector_binary() {
  const char* dir = std::getenv("FNMESH_BIN_DIR");
  return fs::path(dir ? dir : "build/bin") / "fnmesh-collector";
}

struct record {
  std::string id;
  uint32_t attempt = 1;
  std::string function = "resize";
  p::Status status = p::Status::ok;
  int64_t billed_ms = 1;
  int64_t memory_limit_bytes = 256ll << 20;
  int64_t cpu_ns = 0;
};

std::vector<uint8_t> completion_bytes(const record& r, uint64_t seq) {
  flatbuffers::FlatBufferBuilder b;
  // Finished now: the collector keeps outputs for its retention (30 days).
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  p::Timings t(now - 2000, now - 1000, now + int64_t(seq));
  auto result = p::CreateResult(b, b.CreateString(r.id), r.status,
                                b.CreateVector(std::vector<uint8_t>{'o', 'k'}),
                                b.CreateString(""), b.CreateString("node-1"), false, &t,
                                r.attempt, 0, b.CreateString("text/plain"));
  auto usage = p::CreateUsage(b, b.CreateString(r.id), r.attempt, b.CreateString("default"),
                              b.CreateString(r.function), b.CreateString("node-1"), seq, 5000,
                              r.cpu_ns, 0, 1 << 20, r.memory_limit_bytes, 0, 0, false,
                              r.billed_ms, p::AccountingSource::rusage, p::Trigger::cli);
  b.Finish(p::CreateCompletion(b, result, usage));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

// A CollectorRequest carrying records with seqs first_seq, first_seq + 1, ...
std::vector<uint8_t> batch_request(uint64_t request_id, uint64_t first_seq,
                                   const std::vector<record>& records) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<p::SpooledCompletion>> items;
  for (size_t i = 0; i < records.size(); ++i) {
    auto bytes = completion_bytes(records[i], first_seq + i);
    items.push_back(p::CreateSpooledCompletion(b, first_seq + i, b.CreateVector(bytes)));
  }
  auto batch = p::CreateCompletionBatch(b, b.CreateString("node-1"), b.CreateVector(items));
  b.Finish(p::CreateCollectorRequest(b, request_id, p::RequestBody::CompletionBatch,
                                     batch.Union()));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

std::vector<record> make_records(const std::string& prefix, size_t n, std::mt19937_64& rng) {
  std::vector<record> out;
  for (size_t i = 0; i < n; ++i) {
    record r;
    r.id = prefix + std::to_string(i);
    r.function = (i % 3 == 0) ? "thumb" : "resize";
    r.status = (i % 7 == 0) ? p::Status::error : p::Status::ok;
    r.billed_ms = 1 + int64_t(rng() % 5000);
    r.cpu_ns = int64_t(rng() % 1'000'000'000);
    out.push_back(r);
  }
  return out;
}

struct totals {
  uint64_t invocations = 0, errors = 0, billed_ms = 0, cpu_ns = 0;
};

// The collector process and its files; restartable on the same database and port.
class collector_fixture : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(collector_binary())) << collector_binary();
    start("tcp://127.0.0.1:0");
  }

  void start(const std::string& listen) {
    fs::remove(dir_ / "endpoint");
    fs::remove(dir_ / "http");
    std::ofstream(dir_ / "tokens.yml") << "admin: [" << admin_token << "]\n";
    process_.emplace(fnmesh::test::child_process::spawn(
        {.program = collector_binary(),
         .args = {"--listen", listen, "--db", (dir_ / "collector.db").string(),
                  "--endpoint-file", (dir_ / "endpoint").string(), "--http-listen",
                  "127.0.0.1:0", "--http-endpoint-file", (dir_ / "http").string(), "--tokens",
                  (dir_ / "tokens.yml").string()},
         .log = dir_ / "collector.log"}));
    for (auto until = std::chrono::steady_clock::now() + 10s;
         std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(10ms)) {
      std::ifstream in(dir_ / "endpoint"), http(dir_ / "http");
      std::string url;
      if (in >> endpoint_ && http >> url) {
        http_port_ = std::stoi(url.substr(url.rfind(':') + 1));
        return;
      }
      ASSERT_TRUE(process_->running()) << process_->log_text();
    }
    FAIL() << "the collector did not start: " << process_->log_text();
  }

  collector_reply ack_of(collector_client& c, const std::vector<uint8_t>& request,
                         uint64_t request_id) {
    // The client queues nothing for an absent peer: retry until the connection is up.
    bool sent = false;
    for (auto until = std::chrono::steady_clock::now() + 10s;
         !sent && std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(5ms))
      sent = bool(c.send(request));
    EXPECT_TRUE(sent);
    for (;;) {
      auto reply = c.receive(10s);
      if (!reply) {
        ADD_FAILURE() << "no reply: " << reply.error().message() << "\n" << process_->log_text();
        return collector_reply({});
      }
      if (reply->get().request_id() == request_id) return std::move(*reply);
    }
  }

  fnmesh::test::http_reply get(const std::string& target) {
    return fnmesh::test::http_call(http_port_, "GET", target, {}, true,
                                   std::string("Authorization: Bearer ") + admin_token + "\r\n");
  }

  totals usage_totals() {
    auto reply = get("/v1/usage?tenant=default");
    totals t;
    auto body = nlohmann::json::parse(reply.body, nullptr, false);
    if (reply.status != 200 || !body.contains("rows")) {
      ADD_FAILURE() << "usage query: " << reply.status << " " << reply.body;
      return t;
    }
    for (const auto& row : body["rows"]) {
      t.invocations += row["invocations"].get<uint64_t>();
      t.errors += row["errors"].get<uint64_t>();
      t.billed_ms += row["billed_ms"].get<uint64_t>();
      t.cpu_ns += row["cpu_ns"].get<uint64_t>();
    }
    return t;
  }

  static constexpr const char* admin_token = "collector-test-admin-token";
  int http_port_ = 0;

  fnmesh::test::temp_dir dir_{"fnmesh-collector"};
  std::optional<fnmesh::test::child_process> process_;
  std::string endpoint_;
  zmq::context_t ctx_{1};
};

totals sum(const std::vector<record>& records) {
  totals t;
  for (const auto& r : records) {
    ++t.invocations;
    t.errors += r.status != p::Status::ok;
    t.billed_ms += uint64_t(r.billed_ms);
    t.cpu_ns += uint64_t(r.cpu_ns);
  }
  return t;
}

void expect_totals(const totals& got, const totals& want) {
  EXPECT_EQ(got.invocations, want.invocations);
  EXPECT_EQ(got.errors, want.errors);
  EXPECT_EQ(got.billed_ms, want.billed_ms);
  EXPECT_EQ(got.cpu_ns, want.cpu_ns);
}

}  // namespace

TEST_F(collector_fixture, batches_are_acked_after_commit_and_survive_sigkill) {
  std::mt19937_64 rng(7);
  collector_client client(ctx_, endpoint_);
  auto first = make_records("first-", 300, rng);
  auto second = make_records("second-", 200, rng);

  auto ack1 = ack_of(client, batch_request(1, 1, first), 1);
  const auto* a1 = ack1.get().body_as_BatchAck();
  ASSERT_NE(a1, nullptr);
  EXPECT_EQ(p::view(a1->node_id()), "node-1");
  EXPECT_EQ(a1->last_seq(), 300u);
  EXPECT_EQ(a1->stored(), 300u);
  EXPECT_EQ(a1->duplicates(), 0u);

  auto ack2 = ack_of(client, batch_request(2, 301, second), 2);
  ASSERT_NE(ack2.get().body_as_BatchAck(), nullptr);
  EXPECT_EQ(ack2.get().body_as_BatchAck()->last_seq(), 500u);
  EXPECT_EQ(ack2.get().body_as_BatchAck()->stored(), 200u);

  std::vector<record> all = first;
  all.insert(all.end(), second.begin(), second.end());
  expect_totals(usage_totals(), sum(all));

  // Acked means committed: SIGKILL, restart on the same database and port, same totals.
  ASSERT_TRUE(process_->signal(SIGKILL));
  ASSERT_TRUE(process_->wait(5s));
  const std::string same_port = endpoint_;
  start(same_port);
  ASSERT_EQ(endpoint_, same_port);
  expect_totals(usage_totals(), sum(all));

  // A node that never saw the ack resends: every record is a duplicate, totals unchanged.
  auto replay = ack_of(client, batch_request(3, 1, first), 3);
  const auto* r = replay.get().body_as_BatchAck();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->stored(), 0u);
  EXPECT_EQ(r->duplicates(), 300u);
  EXPECT_EQ(r->last_seq(), 300u);
  expect_totals(usage_totals(), sum(all));

  // One attempt read back whole.
  auto act = client.query_activation("second-5", 10s);
  ASSERT_TRUE(act);
  const auto* report = act->get().body_as_ActivationReport();
  ASSERT_NE(report, nullptr);
  ASSERT_NE(report->attempts(), nullptr);
  ASSERT_EQ(report->attempts()->size(), 1u);
  const auto* c = report->attempts()->Get(0);
  ASSERT_NE(c->result(), nullptr);
  ASSERT_NE(c->usage(), nullptr);
  EXPECT_EQ(p::view(c->result()->invocation_id()), "second-5");
  EXPECT_EQ(p::text(p::bytes(c->result()->output())), "ok");
  EXPECT_EQ(c->usage()->billed_duration_ms(), second[5].billed_ms);
  EXPECT_EQ(c->usage()->node_seq(), 306u);

  ASSERT_EQ(process_->stop(), 0) << process_->log_text();
}

TEST_F(collector_fixture, a_batch_refused_while_the_collector_is_down_is_acked_after_restart) {
  std::mt19937_64 rng(11);
  collector_client client(ctx_, endpoint_);
  auto early = make_records("early-", 10, rng);
  ASSERT_NE(ack_of(client, batch_request(1, 1, early), 1).get().body_as_BatchAck(), nullptr);

  ASSERT_TRUE(process_->signal(SIGKILL));
  ASSERT_TRUE(process_->wait(5s));
  auto late = make_records("late-", 25, rng);
  // Refused at once rather than queued: no stale copies pile up while the collector is away.
  bool refused = false;
  for (auto until = std::chrono::steady_clock::now() + 5s;
       !refused && std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(10ms))
    refused = !client.send(batch_request(2, 11, late));
  EXPECT_TRUE(refused);

  start(endpoint_);
  auto reply = ack_of(client, batch_request(3, 11, late), 3);
  const auto* ack = reply.get().body_as_BatchAck();
  ASSERT_NE(ack, nullptr) << process_->log_text();
  EXPECT_EQ(ack->stored(), 25u);
  EXPECT_EQ(ack->last_seq(), 35u);
  std::vector<record> all = early;
  all.insert(all.end(), late.begin(), late.end());
  expect_totals(usage_totals(), sum(all));
}

TEST_F(collector_fixture, garbage_is_dropped_and_counted_and_the_collector_keeps_serving) {
  std::mt19937_64 rng(3);
  {
    zmq::socket_t raw(ctx_, zmq::socket_type::dealer);
    raw.set(zmq::sockopt::linger, 1000);
    raw.connect(endpoint_);
    std::vector<uint8_t> noise(512);
    for (auto& b : noise) b = uint8_t(rng());
    raw.send(zmq::buffer(noise));                                  // 1: random bytes
    raw.send(zmq::str_buffer("two"), zmq::send_flags::sndmore);   // 2: two frames
    auto valid = batch_request(9, 1, make_records("never-", 1, rng));
    raw.send(zmq::buffer(valid));
    auto truncated = batch_request(10, 1, make_records("cut-", 5, rng));
    truncated.resize(truncated.size() / 2);
    raw.send(zmq::buffer(truncated));                             // 3: a torn request
    std::vector<uint8_t> oversized(p::max_message_bytes + 1024, 0);
    raw.send(zmq::buffer(oversized));                             // 4: over the limit
    raw.send(zmq::message_t(), zmq::send_flags::none);            // 5: empty
  }
  collector_client client(ctx_, endpoint_);
  // Still serving: a real batch after the garbage is stored and acked.
  auto good = make_records("good-", 4, rng);
  auto ack = ack_of(client, batch_request(77, 1, good), 77);
  ASSERT_NE(ack.get().body_as_BatchAck(), nullptr);
  EXPECT_EQ(ack.get().body_as_BatchAck()->stored(), 4u);
  expect_totals(usage_totals(), sum(good));  // nothing from the garbage was stored

  // An unknown grouping is an answer, not a crash.
  auto bad = get("/v1/usage?by=colour");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("colour"), std::string::npos) << bad.body;

  EXPECT_EQ(process_->stop(), 0);
  const auto log = process_->log_text();
  EXPECT_NE(log.find("dropped a malformed message from"), std::string::npos) << log;
  EXPECT_NE(log.find("5 malformed"), std::string::npos) << log;
  // Rate-limited: one line for the one peer, not one per message.
  size_t lines = 0;
  for (size_t at = log.find("dropped a malformed"); at != std::string::npos;
       at = log.find("dropped a malformed", at + 1))
    ++lines;
  EXPECT_EQ(lines, 1u) << log;
}

TEST_F(collector_fixture, a_second_collector_on_a_taken_port_refuses_with_one_line) {
  auto second = fnmesh::test::child_process::spawn(
      {.program = collector_binary(),
       .args = {"--listen", endpoint_, "--db", (dir_ / "other.db").string()},
       .log = dir_ / "second.log"});
  auto code = second.wait(10s);
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 1);
  const auto log = second.log_text();
  EXPECT_NE(log.find("cannot listen on " + endpoint_), std::string::npos) << log;
  EXPECT_TRUE(process_->running());
}

// The ZeroMQ client pieces on their own (no collector process).

TEST(reply_router, delivers_verified_results_and_counts_garbage) {
  zmq::context_t ctx(1);
  auto router = fnmesh::broker::reply_router::bind(ctx);
  ASSERT_TRUE(router) << router.error().message();
  const std::string endpoint = (*router)->endpoint();
  EXPECT_TRUE(endpoint.starts_with("tcp://127.0.0.1:")) << endpoint;
  EXPECT_NE(endpoint, "tcp://127.0.0.1:0");
  auto nothing = (*router)->receive(20ms);
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error(), fnmesh::errc::timeout);

  zmq::socket_t node(ctx, zmq::socket_type::dealer);
  node.set(zmq::sockopt::linger, 0);
  node.connect(endpoint);
  node.send(zmq::str_buffer("not a flatbuffer"), zmq::send_flags::none);
  node.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  node.send(zmq::str_buffer("b"), zmq::send_flags::none);
  flatbuffers::FlatBufferBuilder b;
  b.Finish(p::CreateResult(b, b.CreateString("01ARZ3NDEKTSV4RRFFQ69G5FAV"), p::Status::ok,
                           b.CreateVector(std::vector<uint8_t>{'h', 'i'}), 0, 0, false,
                           nullptr, 1, 42));
  node.send(zmq::buffer(b.GetBufferPointer(), b.GetSize()), zmq::send_flags::none);

  auto got = (*router)->receive(5s);
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(p::view(got->get().invocation_id()), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_EQ(got->get().correlation(), 42u);
  EXPECT_EQ(p::text(p::bytes(got->get().output())), "hi");
  EXPECT_EQ((*router)->malformed(), 2u);
}

TEST(collector_client, a_query_waits_for_the_reply_with_its_own_id) {
  zmq::context_t ctx(1);
  zmq::socket_t fake(ctx, zmq::socket_type::router);
  fake.set(zmq::sockopt::linger, 0);
  fake.bind("tcp://127.0.0.1:*");
  const std::string endpoint = fake.get(zmq::sockopt::last_endpoint);
  std::thread server([&] {
    zmq::message_t id, body;
    if (!fake.recv(id) || !fake.recv(body)) return;
    const auto* req = p::verified<p::CollectorRequest>(
        std::span<const uint8_t>(body.data<uint8_t>(), body.size()));
    if (!req || !req->body_as_ActivationQuery()) return;
    auto reply = [&](uint64_t request_id, const char* invocation) {
      flatbuffers::FlatBufferBuilder b;
      std::vector<flatbuffers::Offset<p::Completion>> attempts{
          p::CreateCompletion(b, p::CreateResult(b, b.CreateString(invocation)))};
      auto report = p::CreateActivationReport(b, b.CreateVector(attempts));
      b.Finish(p::CreateCollectorReply(b, request_id, p::ReplyBody::ActivationReport,
                                       report.Union()));
      zmq::message_t to(id.data(), id.size());
      fake.send(to, zmq::send_flags::sndmore);
      fake.send(zmq::buffer(b.GetBufferPointer(), b.GetSize()), zmq::send_flags::none);
    };
    fake.send(zmq::message_t(id.data(), id.size()), zmq::send_flags::sndmore);
    fake.send(zmq::str_buffer("garbage"), zmq::send_flags::none);
    reply(req->request_id() + 1000, "stale");  // somebody else's id
    reply(req->request_id(), "mine");
  });
  collector_client client(ctx, endpoint);
  auto got = client.query_activation("mine", 5s);
  server.join();
  ASSERT_TRUE(got) << got.error().message();
  const auto* report = got->get().body_as_ActivationReport();
  ASSERT_NE(report, nullptr);
  ASSERT_EQ(report->attempts()->size(), 1u);
  EXPECT_EQ(p::view(report->attempts()->Get(0)->result()->invocation_id()), "mine");
}
