// fnmesh-http as a user meets it: the real binary against a real nats-server, spoken to
// over plain HTTP/1.1 sockets. The test plays the node: it pulls invocations from the
// function's consumer and sends Results to the reply endpoint named in them.
#include <arpa/inet.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "broker/client/connection.h"
#include "broker/client/kv.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "common/clock.h"
#include "common/ulid.h"
#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "tests/support/bootstrapped_nats.h"
#include "tests/support/child_process.h"
#include "tests/support/function_spec.h"
#include "tests/support/http_exchange.h"
#include "tests/support/eventually.h"
#include "tests/support/invocation_queue.h"
#include "tests/support/mesh.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace fnmesh {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

using test::callback_receiver;
using test::http_call;
using test::http_reply;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class http_adapter : public test::bootstrapped_nats {
 protected:
  void SetUp() override {
    bootstrapped_nats::SetUp();
    if (HasFatalFailure()) return;
    for (auto [name, timeout] : {std::pair{"echo", 3u}, std::pair{"quick", 1u}})
      ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = name,
                                                               .runtime = proto::Runtime::exec,
                                                               .handler = "./run",
                                                               .timeout_s = timeout})));
    // concurrency 1 (429s), and a long timeout for calls that wait long.
    ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = "single",
                                                             .runtime = proto::Runtime::exec,
                                                             .handler = "./run",
                                                             .concurrency = 1})));
    ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = "sleepy",
                                                             .runtime = proto::Runtime::exec,
                                                             .handler = "./run",
                                                             .timeout_s = 30})));
    ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = "internal",
                                                             .runtime = proto::Runtime::exec,
                                                             .handler = "./run",
                                                             .http = false})));
    adapter_ = start_adapter("127.0.0.1:0", "adapter.log");
    std::ifstream(dir_ / "port") >> host_port_;
    port_ = std::stoi(host_port_.substr(host_port_.rfind(':') + 1));
  }

  void TearDown() override {
    for (auto& [name, sub] : subs_) natsSubscription_Destroy(sub);
  }

  // `auth`: --no-auth, or --api-keys FILE.
  test::child_process start_adapter(const std::string& listen, const std::string& log,
                                    const std::string& collector = "tcp://127.0.0.1:9",
                                    std::vector<std::string> auth = {"--no-auth"}) {
    fs::remove(dir_ / "port");
    std::vector<std::string> args = {"--nats", nats_->url(), "--listen", listen, "--port-file",
                                     (dir_ / "port").string(), "--collector", collector,
                                     "--wait-margin-ms", "500", "--log-level", "debug",
                                     "--callback-backoff-ms", "100"};
    args.insert(args.end(), auth.begin(), auth.end());
    auto p = test::child_process::spawn(
        {.program = test::bin("fnmesh-http"), .args = std::move(args), .log = dir_ / log});
    for (int i = 0; i < 200 && !fs::exists(dir_ / "port") && p.running(); ++i)
      std::this_thread::sleep_for(25ms);
    return p;
  }

  // Replaces the fixture's adapter with another started with `auth`.
  void restart_adapter(std::vector<std::string> auth) {
    adapter_->stop(10s);
    adapter_ = start_adapter("127.0.0.1:0", "adapter-2.log", "tcp://127.0.0.1:9", std::move(auth));
    std::ifstream(dir_ / "port") >> host_port_;
    port_ = std::stoi(host_port_.substr(host_port_.rfind(':') + 1));
  }

  // The next invocation on a function's consumer (acked), verified; empty if none came.
  std::vector<uint8_t> pull(std::string_view function, std::chrono::milliseconds wait = 5s) {
    const std::string consumer = broker::consumer_name("default", function);
    auto& sub = subs_[consumer];
    if (!sub) {
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = broker::invoke_stream.data();
      so.Consumer = consumer.c_str();
      EXPECT_EQ(js_PullSubscribe(&sub, conn_->js(), broker::invoke_subject("default", function).c_str(),
                                 consumer.c_str(), nullptr, &so, nullptr),
                NATS_OK);
    }
    natsMsgList list{};
    if (natsSubscription_Fetch(&list, sub, 1, wait.count(), nullptr) != NATS_OK) return {};
    std::vector<uint8_t> data;
    if (list.Count == 1) {
      auto* m = list.Msgs[0];
      auto* p = reinterpret_cast<const uint8_t*>(natsMsg_GetData(m));
      data.assign(p, p + natsMsg_GetDataLength(m));
      natsMsg_AckSync(m, nullptr, nullptr);
    }
    natsMsgList_Destroy(&list);
    return data;
  }

  // Plays the node: a DEALER to the invocation's reply endpoint sends one Result.
  void reply(const proto::Invocation& inv, proto::Status status, std::string_view output,
             std::string_view error = {}) {
    flatbuffers::FlatBufferBuilder b;
    std::vector<uint8_t> out(output.begin(), output.end());
    b.Finish(proto::CreateResultDirect(b, inv.id()->c_str(), status, &out,
                                       std::string(error).c_str(), "test-node", false, nullptr, 1,
                                       inv.reply()->correlation(), "text/plain"));
    dealer().send(zmq::buffer(b.GetBufferPointer(), b.GetSize()), zmq::send_flags::none);
  }

  zmq::socket_t& dealer() {
    if (!dealer_) {
      dealer_.emplace(zmq_, zmq::socket_type::dealer);
      dealer_->set(zmq::sockopt::linger, 0);
      dealer_->connect(reply_endpoint_);
    }
    return *dealer_;
  }

  // Sends a sync call in the background and returns the invocation it produced.
  std::pair<std::future<http_reply>, std::vector<uint8_t>> call_sync(std::string_view function,
                                                                     std::string body) {
    auto fut = std::async(std::launch::async, [this, f = std::string(function), body] {
      return http_call(port_, "POST", "/function/" + f, body);
    });
    auto inv = pull(function);
    return {std::move(fut), std::move(inv)};
  }

  std::string metrics() { return http_call(port_, "GET", "/metrics").body; }
  bool eventually_metric(const std::string& line) {
    return test::eventually([&] { return metrics().find(line) != std::string::npos; }, 10s);
  }

  test::temp_dir dir_{"http-adapter"};
  std::optional<test::child_process> adapter_;
  std::string host_port_;
  int port_ = 0;
  std::map<std::string, natsSubscription*> subs_;
  zmq::context_t zmq_{1};
  std::optional<zmq::socket_t> dealer_;
  std::string reply_endpoint_;
};

TEST_F(http_adapter, healthz_answers_and_unknown_paths_are_404) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  EXPECT_TRUE(host_port_.starts_with("127.0.0.1:"));
  auto r = http_call(port_, "GET", "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(http_call(port_, "GET", "/nope").status, 404);
  EXPECT_EQ(http_call(port_, "GET", "/function/echo").status, 405);
}

TEST_F(http_adapter, unknown_function_is_404_at_once) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = http_call(port_, "POST", "/function/missing", "{}");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("\"error\":\"no_such_function\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"function\":\"missing\""), std::string::npos) << r.body;
  EXPECT_EQ(http_call(port_, "POST", "/async-function/missing", "{}").status, 404);
  // Deployed, but its manifest keeps it off HTTP.
  auto off = http_call(port_, "POST", "/function/internal", "{}");
  EXPECT_EQ(off.status, 403) << off.body;
  EXPECT_NE(off.body.find("http_trigger_disabled"), std::string::npos) << off.body;
}

TEST_F(http_adapter, oversized_bodies_are_refused_before_they_are_read_naming_the_limit) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  // Only the header is sent: the answer must come from Content-Length alone.
  auto sync = http_call(port_, "POST", "/function/echo", {}, false, {}, (6u << 20) + 1);
  EXPECT_EQ(sync.status, 413);
  EXPECT_NE(sync.body.find("6291456"), std::string::npos) << sync.body;
  auto async = http_call(port_, "POST", "/async-function/echo", {}, false, {}, (1u << 20) + 1);
  EXPECT_EQ(async.status, 413);
  EXPECT_NE(async.body.find("1048576"), std::string::npos) << async.body;
  // A body really sent over the async limit, whole: still 413, connection not reset.
  auto sent = http_call(port_, "POST", "/async-function/echo", std::string((1u << 20) + 10, 'x'));
  EXPECT_EQ(sent.status, 413);
  // Nothing was published.
  EXPECT_TRUE(pull("echo", 300ms).empty());
}

TEST_F(http_adapter, async_call_is_202_with_an_id_and_the_invocation_is_on_the_stream) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto r = http_call(port_, "POST", "/async-function/echo", R"({"n":1})", true,
                     "Content-Type: application/json\r\n");
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string id = r.headers["x-call-id"];
  EXPECT_TRUE(is_ulid(id)) << id;
  EXPECT_NE(r.body.find("\"invocation_id\":\"" + id + "\""), std::string::npos) << r.body;

  auto data = pull("echo");
  auto* inv = proto::verified<proto::Invocation>(data);
  ASSERT_NE(inv, nullptr);
  EXPECT_EQ(proto::view(inv->id()), id);
  EXPECT_EQ(proto::view(inv->function()), "echo");
  EXPECT_EQ(proto::text(proto::bytes(inv->payload())), R"({"n":1})");
  EXPECT_EQ(proto::view(inv->content_type()), "application/json");
  EXPECT_EQ(inv->trigger(), proto::Trigger::http);
  EXPECT_EQ(inv->reply(), nullptr);  // async: nobody waits
}

TEST_F(http_adapter, async_call_is_not_202_when_the_stream_does_not_store_it) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  nats_->stop();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = http_call(port_, "POST", "/async-function/echo", "{}");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("\"error\":\"unavailable\""), std::string::npos) << r.body;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
  EXPECT_EQ(http_call(port_, "GET", "/healthz").status, 200);  // still serving
}

TEST_F(http_adapter, sync_call_answers_with_the_result_the_node_sends) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto [fut, data] = call_sync("echo", "hello");
  auto* inv = proto::verified<proto::Invocation>(data);
  ASSERT_NE(inv, nullptr);
  ASSERT_NE(inv->reply(), nullptr);
  EXPECT_EQ(proto::text(proto::bytes(inv->payload())), "hello");
  reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
  // Garbage first: dropped and counted, the adapter keeps serving.
  dealer().send(zmq::str_buffer("not a flatbuffer"), zmq::send_flags::none);
  reply(*inv, proto::Status::ok, "hello back");
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  auto r = fut.get();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "hello back");
  EXPECT_EQ(r.headers["content-type"], "text/plain");
  EXPECT_EQ(r.headers["x-call-id"], proto::view(inv->id()));

  std::string m;
  for (int i = 0; i < 40; ++i) {
    m = metrics();
    if (m.find("fnmesh_http_results_malformed_total 1\n") != std::string::npos) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_NE(m.find("fnmesh_http_results_malformed_total 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("fnmesh_http_requests_total{code=\"200\"} 1\n"), std::string::npos) << m;
}

TEST_F(http_adapter, result_statuses_become_http_statuses) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  for (auto [status, code] : {std::pair{proto::Status::timeout, 504},
                              std::pair{proto::Status::error, 502},
                              std::pair{proto::Status::rejected, 429}}) {
    auto [fut, data] = call_sync("echo", "x");
    auto* inv = proto::verified<proto::Invocation>(data);
    ASSERT_NE(inv, nullptr);
    reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
    reply(*inv, status, "", "it went wrong");
    ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
    auto r = fut.get();
    EXPECT_EQ(r.status, code) << proto::status_name(status) << ": " << r.body;
    EXPECT_EQ(r.headers["x-fnmesh-status"], proto::status_name(status));
    if (status == proto::Status::error) {
      EXPECT_NE(r.body.find("it went wrong"), std::string::npos) << r.body;
    }
  }
}

TEST_F(http_adapter, gives_up_with_504_after_the_function_timeout_and_ignores_late_results) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  const auto t0 = std::chrono::steady_clock::now();
  auto [fut, data] = call_sync("quick", "x");  // timeout 1 s + 0.5 s margin
  auto* inv = proto::verified<proto::Invocation>(data);
  ASSERT_NE(inv, nullptr);
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  auto r = fut.get();
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_GE(took, 1400ms);
  EXPECT_LT(took, 5s);
  // The result arriving afterwards matches nothing; the adapter still serves.
  reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
  reply(*inv, proto::Status::ok, "too late");
  std::string m;
  for (int i = 0; i < 40; ++i) {
    m = metrics();
    if (m.find("fnmesh_http_results_unmatched_total 1\n") != std::string::npos) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_NE(m.find("fnmesh_http_results_unmatched_total 1\n"), std::string::npos) << m;
}

TEST_F(http_adapter, invocation_lookup_without_a_collector_answers_503_not_a_hang) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  EXPECT_EQ(http_call(port_, "GET", "/invocations/not-an-id").status, 404);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = http_call(port_, "GET", "/invocations/" + new_ulid());
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

// What a node sends the collector for one finished invocation.
std::vector<uint8_t> completion_batch(const std::string& id, std::string_view output) {
  flatbuffers::FlatBufferBuilder c;
  std::vector<uint8_t> out(output.begin(), output.end());
  const int64_t now = fnmesh::unix_now_ns();  // within the collector's output retention
  proto::Timings t(now - 2000, now - 1000, now);
  auto result = proto::CreateResultDirect(c, id.c_str(), proto::Status::ok, &out, "", "node-1",
                                          false, &t, 1, 0, "text/plain");
  auto usage = proto::CreateUsageDirect(c, id.c_str(), 1, "default", "echo", "node-1", 1, 5000);
  c.Finish(proto::CreateCompletion(c, result, usage));
  std::vector<uint8_t> completion(c.GetBufferPointer(), c.GetBufferPointer() + c.GetSize());

  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<proto::SpooledCompletion>> items{
      proto::CreateSpooledCompletionDirect(b, 1, &completion)};
  auto batch = proto::CreateCompletionBatchDirect(b, "node-1", &items);
  b.Finish(proto::CreateCollectorRequest(b, 1, proto::RequestBody::CompletionBatch, batch.Union()));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

TEST_F(http_adapter, invocation_lookup_reads_the_stored_result_from_the_collector) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  const auto collector_bin = test::bin("fnmesh-collector");
  ASSERT_TRUE(fs::exists(collector_bin)) << "fnmesh-collector is not built";
  auto collector = test::child_process::spawn(
      {.program = collector_bin,
       .args = {"--listen", "tcp://127.0.0.1:0", "--db", (dir_ / "collector.db").string(),
                "--endpoint-file", (dir_ / "endpoint").string()},
       .log = dir_ / "collector.log"});
  std::string endpoint;
  for (int i = 0; i < 400 && endpoint.empty(); ++i) {
    std::this_thread::sleep_for(25ms);
    std::ifstream(dir_ / "endpoint") >> endpoint;
  }
  ASSERT_FALSE(endpoint.empty()) << collector.log_text();

  // Store one completion as a node does, and wait for the collector's ack.
  const std::string id = new_ulid();
  zmq::socket_t node(zmq_, zmq::socket_type::dealer);
  node.set(zmq::sockopt::linger, 0);
  node.set(zmq::sockopt::rcvtimeo, 10000);
  node.connect(endpoint);
  auto batch = completion_batch(id, "stored output");
  node.send(zmq::buffer(batch), zmq::send_flags::none);
  zmq::message_t ack;
  ASSERT_TRUE(node.recv(ack)) << collector.log_text();

  adapter_->stop(10s);
  adapter_ = start_adapter("127.0.0.1:0", "with-collector.log", endpoint);
  std::ifstream(dir_ / "port") >> host_port_;
  port_ = std::stoi(host_port_.substr(host_port_.rfind(':') + 1));

  auto r = http_call(port_, "GET", "/invocations/" + id);
  EXPECT_EQ(r.status, 200) << r.body << adapter_->log_text();
  EXPECT_NE(r.body.find("\"id\":\"" + id + "\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"status\":\"ok\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"output\":\"stored output\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"attempts\":1"), std::string::npos) << r.body;
  auto unknown = http_call(port_, "GET", "/invocations/" + new_ulid());
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_NE(unknown.body.find("no_such_invocation"), std::string::npos) << unknown.body;

  // Accepted here but not run yet: pending, not unknown.
  auto accepted = http_call(port_, "POST", "/async-function/echo", "later");
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  auto pending = http_call(port_, "GET", "/invocations/" + accepted.headers["x-call-id"]);
  EXPECT_EQ(pending.status, 200) << pending.body;
  EXPECT_NE(pending.body.find("\"status\":\"pending\""), std::string::npos) << pending.body;
}

TEST_F(http_adapter, expect_100_continue_is_honoured_and_refusals_skip_the_body) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto raw_exchange = [this](const std::string& head, const std::string& body) {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    timeval tv{10, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::send(fd.get(), head.data(), head.size(), MSG_NOSIGNAL);
    char buf[4096];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    std::string first(buf, size_t(std::max<ssize_t>(n, 0)));
    std::string rest;
    if (first.starts_with("HTTP/1.1 100")) {
      ::send(fd.get(), body.data(), body.size(), MSG_NOSIGNAL);
      while ((n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0) rest.append(buf, size_t(n));
    }
    return std::pair{first, rest};
  };
  const std::string body = R"({"big":"enough"})";
  auto [cont, final] = raw_exchange(
      "POST /async-function/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Expect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n",
      body);
  EXPECT_TRUE(cont.starts_with("HTTP/1.1 100")) << cont;
  EXPECT_TRUE(final.starts_with("HTTP/1.1 202")) << final;
  const auto pulled = pull("echo");
  auto* inv = proto::verified<proto::Invocation>(pulled);
  ASSERT_NE(inv, nullptr);
  EXPECT_EQ(proto::text(proto::bytes(inv->payload())), body);

  // Unknown function: the final answer comes instead of 100, without the body.
  auto [refused, nothing] = raw_exchange(
      "POST /function/missing HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Length: 5\r\n\r\n",
      "hello");
  EXPECT_TRUE(refused.starts_with("HTTP/1.1 404")) << refused;
}

TEST_F(http_adapter, sigterm_lets_a_waiting_sync_call_finish_then_exits_0) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto [fut, data] = call_sync("echo", "draining");
  auto* inv = proto::verified<proto::Invocation>(data);
  ASSERT_NE(inv, nullptr);
  ASSERT_TRUE(adapter_->signal(SIGTERM));
  ASSERT_TRUE(adapter_->wait_for_log("stopping: 1 sync calls still waiting", 5s))
      << adapter_->log_text();
  reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
  reply(*inv, proto::Status::ok, "finished while draining");
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  auto r = fut.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "finished while draining");
  auto code = adapter_->wait(10s);
  ASSERT_TRUE(code.has_value()) << adapter_->log_text();
  EXPECT_EQ(*code, 0);
}

TEST_F(http_adapter, port_taken_is_one_clear_line_and_sigterm_exits_0) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto second = start_adapter(host_port_, "second.log");
  auto code = second.wait(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(second.log_text().find("cannot listen on " + host_port_), std::string::npos)
      << second.log_text();
  EXPECT_EQ(http_call(port_, "GET", "/healthz").status, 200);  // the first one is unharmed
  EXPECT_EQ(adapter_->stop(10s), 0) << adapter_->log_text();
}

TEST_F(http_adapter, api_keys_gate_every_invocation_and_name_the_callers_tenant) {
  ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = "echo", .tenant = "acme",
                                                           .runtime = proto::Runtime::exec,
                                                           .handler = "./run"})));
  const std::string default_key = "k-default-5f1c0e9a7b";
  const std::string acme_key = "k-acme-93d2b7c41e0f";
  std::ofstream(dir_ / "keys.yml") << "default: [" << default_key << "]\nacme: [" << acme_key << "]\n";
  restart_adapter({"--api-keys", (dir_ / "keys.yml").string()});
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto bearer = [](const std::string& key) { return "Authorization: Bearer " + key + "\r\n"; };

  for (auto [path, headers] : {std::pair<std::string, std::string>{"/function/echo", ""},
                               {"/async-function/echo", ""},
                               {"/async-function/echo", bearer("k-wrong-0000000000")},
                               {"/async-function/echo", "Authorization: Basic a2V5Og==\r\n"}}) {
    auto r = http_call(port_, "POST", path, "{}", true, headers);
    EXPECT_EQ(r.status, 401) << path << " " << headers << r.body;
    EXPECT_EQ(r.headers["www-authenticate"], "Bearer realm=\"fnmesh\"");
  }
  EXPECT_EQ(http_call(port_, "GET", "/invocations/" + new_ulid()).status, 401);
  EXPECT_EQ(http_call(port_, "GET", "/healthz").status, 200);  // probes need no key

  // Each key invokes its own tenant's function of that name.
  test::invocation_queue acme(*conn_, "echo", "acme");
  auto a = http_call(port_, "POST", "/async-function/echo", "for acme", true, bearer(acme_key));
  ASSERT_EQ(a.status, 202) << a.body;
  auto d = http_call(port_, "POST", "/async-function/echo", "for default", true, bearer(default_key));
  ASSERT_EQ(d.status, 202) << d.body;
  auto acme_ids = acme.drain_ids(1s);
  EXPECT_EQ(acme_ids, std::vector<std::string>{a.headers["x-call-id"]});
  const auto pulled = pull("echo");
  auto* inv = proto::verified<proto::Invocation>(pulled);
  ASSERT_NE(inv, nullptr);
  EXPECT_EQ(proto::view(inv->id()), d.headers["x-call-id"]);
  EXPECT_EQ(proto::view(inv->tenant()), "default");
  EXPECT_TRUE(pull("echo", 500ms).empty()) << "a refused call published nothing";
  // acme has no function "quick": its key does not reach default's.
  EXPECT_EQ(http_call(port_, "POST", "/function/quick", "x", true, bearer(acme_key)).status, 404);
}

TEST_F(http_adapter, sync_calls_over_the_functions_concurrency_get_429) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto [first, data] = call_sync("single", "one");
  auto* inv = proto::verified<proto::Invocation>(data);
  ASSERT_NE(inv, nullptr);
  auto over = http_call(port_, "POST", "/function/single", "two");
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_NE(over.body.find("too_many_requests"), std::string::npos) << over.body;
  EXPECT_TRUE(pull("single", 500ms).empty()) << "the refused call was published";
  reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
  reply(*inv, proto::Status::ok, "one done");
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(first.get().status, 200);

  auto [third, again] = call_sync("single", "three");  // room again
  auto* inv3 = proto::verified<proto::Invocation>(again);
  ASSERT_NE(inv3, nullptr);
  reply(*inv3, proto::Status::ok, "three done");
  ASSERT_EQ(third.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(third.get().body, "three done");
}

TEST_F(http_adapter, async_callback_gets_the_result_and_is_retried_until_accepted) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  auto bad = http_call(port_, "POST", "/async-function/echo", "x", true,
                       "X-Callback-Url: https://example.com/hook\r\n");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_TRUE(pull("echo", 500ms).empty()) << "a refused call was published";

  callback_receiver receiver(2);
  auto accepted = receiver.accepted();
  auto r = http_call(port_, "POST", "/async-function/echo", "work", true,
                     "X-Callback-Url: http://127.0.0.1:" + std::to_string(receiver.port()) + "/hook?job=7\r\n");
  ASSERT_EQ(r.status, 202) << r.body;
  const auto pulled = pull("echo");
  auto* inv = proto::verified<proto::Invocation>(pulled);
  ASSERT_NE(inv, nullptr);
  ASSERT_NE(inv->reply(), nullptr);
  EXPECT_TRUE(inv->reply()->callback()) << "still an async invocation";
  EXPECT_EQ(inv->deadline_ns(), 0) << "an async invocation's timeout counts from its start";
  reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
  reply(*inv, proto::Status::ok, "work done");

  ASSERT_EQ(accepted.wait_for(20s), std::future_status::ready) << adapter_->log_text();
  const std::string got = accepted.get();
  EXPECT_EQ(receiver.requests(), 3) << "two refusals, then accepted";
  EXPECT_TRUE(got.starts_with("POST /hook?job=7 HTTP/1.1\r\n")) << got;
  EXPECT_NE(got.find("X-Call-Id: " + r.headers["x-call-id"] + "\r\n"), std::string::npos) << got;
  EXPECT_NE(got.find("X-Function-Status: 200\r\n"), std::string::npos) << got;
  EXPECT_NE(got.find("X-Fnmesh-Status: ok\r\n"), std::string::npos) << got;
  EXPECT_TRUE(got.ends_with("\r\n\r\nwork done")) << got;
  EXPECT_TRUE(eventually_metric("fnmesh_http_callbacks_delivered_total 1\n")) << metrics();
}

TEST_F(http_adapter, a_thousand_sync_calls_wait_at_once_on_a_few_threads) {
  constexpr int calls = 1000;
  ASSERT_GT(port_, 0) << adapter_->log_text();
  // curl holds a socket per call, and so does the adapter (it raises its own limit).
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0);
  ASSERT_GE(lim.rlim_cur, rlim_t(calls + 100));
  // curl runs at most 300 transfers at once: five of them, 200 calls each.
  constexpr int curls = 5;
  std::vector<test::child_process> clients;
  for (int k = 0; k < curls; ++k) {
    const fs::path config = dir_ / ("calls-" + std::to_string(k) + ".curl");
    {
      std::ofstream out(config);
      for (int i = k; i < calls; i += curls)
        out << "url = \"http://" << host_port_ << "/function/sleepy?call=" << i << "\"\noutput = \""
            << (dir_ / ("out-" + std::to_string(i))).string() << "\"\n";
    }
    clients.push_back(test::child_process::spawn(
        {.program = "/usr/bin/curl",
         .args = {"-sS", "--no-progress-meter", "--parallel", "--parallel-immediate", "--parallel-max",
                  std::to_string(calls / curls), "--max-time", "60", "-d", "zzz", "-w",
                  "%{http_code}\n", "-K", config.string()},
         .log = dir_ / ("curl-" + std::to_string(k) + ".log")}));
  }

  // Plays a node that runs every call for 1 s — but answers none until all are waiting.
  test::invocation_queue queue(*conn_, "sleepy");
  std::vector<std::vector<uint8_t>> held;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (held.size() < size_t(calls) && std::chrono::steady_clock::now() < deadline) {
    auto got = queue.pull(200ms);
    held.insert(held.end(), std::make_move_iterator(got.begin()), std::make_move_iterator(got.end()));
  }
  ASSERT_EQ(held.size(), size_t(calls)) << adapter_->log_text();
  EXPECT_TRUE(eventually_metric("fnmesh_http_waiting_requests 1000\n")) << metrics();
  std::string status = read_file("/proc/" + std::to_string(adapter_->pid()) + "/status");
  const int threads = std::atoi(status.c_str() + status.find("Threads:") + 8);
  EXPECT_LT(threads, 16) << "no thread per waiting request";
  std::this_thread::sleep_for(1s);
  for (const auto& data : held) {
    auto* inv = proto::verified<proto::Invocation>(data);
    reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
    const std::string source(proto::view(inv->source()));
    reply(*inv, proto::Status::ok, source.substr(source.find("call=") + 5));
  }
  for (auto& curl : clients) {
    auto code = curl.wait(60s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 0) << curl.log_text();
    const std::string codes = curl.log_text();
    EXPECT_EQ(std::count(codes.begin(), codes.end(), '\n'), calls / curls);
    EXPECT_EQ(codes.find_first_not_of("200\n"), std::string::npos) << codes;
  }
  for (int i = 0; i < calls; ++i)
    ASSERT_EQ(read_file(dir_ / ("out-" + std::to_string(i))), std::to_string(i)) << "call " << i;
}

TEST_F(http_adapter, serves_again_after_the_nats_server_restarts) {
  ASSERT_GT(port_, 0) << adapter_->log_text();
  nats_->stop();
  nats_->restart();
  ASSERT_TRUE(adapter_->wait_for_log("reconnected", 15s)) << adapter_->log_text();
  for (auto& [name, sub] : subs_) natsSubscription_Destroy(sub);
  subs_.clear();
  auto [fut, data] = call_sync("echo", "after restart");
  auto* inv = proto::verified<proto::Invocation>(data);
  ASSERT_NE(inv, nullptr) << adapter_->log_text();
  reply_endpoint_ = std::string(proto::view(inv->reply()->endpoint()));
  reply(*inv, proto::Status::ok, "still here");
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  auto r = fut.get();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "still here");
}

TEST_F(http_adapter, without_keys_or_no_auth_it_refuses_to_start) {
  auto p = test::child_process::spawn({.program = test::bin("fnmesh-http"),
                                       .args = {"--nats", nats_->url(), "--listen", "127.0.0.1:0"},
                                       .log = dir_ / "noauth.log"});
  auto code = p.wait(15s);
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(p.log_text().find("give --api-keys FILE"), std::string::npos) << p.log_text();
  std::ofstream(dir_ / "short.yml") << "default: [short]\n";
  auto bad = test::child_process::spawn({.program = test::bin("fnmesh-http"),
                                         .args = {"--nats", nats_->url(), "--listen", "127.0.0.1:0",
                                                  "--api-keys", (dir_ / "short.yml").string()},
                                         .log = dir_ / "badkeys.log"});
  code = bad.wait(15s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
  EXPECT_NE(bad.log_text().find("short.yml:1: default: a key must be at least 16 characters"),
            std::string::npos)
      << bad.log_text();
}

TEST_F(http_adapter, nats_unreachable_is_one_line_naming_the_url) {
  auto p = test::child_process::spawn({.program = test::bin("fnmesh-http"),
                                       .args = {"--nats", "nats://127.0.0.1:9", "--listen",
                                                "127.0.0.1:0", "--no-auth"},
                                       .log = dir_ / "nonats.log"});
  auto code = p.wait(15s);
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(p.log_text().find("nats://127.0.0.1:9"), std::string::npos) << p.log_text();
}

}  // namespace
}  // namespace fnmesh
