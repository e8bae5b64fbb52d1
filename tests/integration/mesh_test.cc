// End to end through real processes: an invocation published on NATS runs on a node, the
// caller gets the Result over ZeroMQ, the collector bills it — including when the
// collector or a node is killed mid-stream.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <csignal>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "broker/client/collector_client.h"
#include "broker/client/connection.h"
#include "broker/client/invoker.h"
#include "broker/client/reply_router.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "common/errc.h"
#include "tests/support/child_process.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
using namespace std::chrono_literals;
using fnmesh::test::child_process;

namespace {

fs::path bin(const std::string& name) { return fs::path(std::getenv("FNMESH_BIN_DIR")) / name; }
fs::path source_dir() { return std::getenv("FNMESH_SOURCE_DIR"); }
fs::path build_dir() { return std::getenv("FNMESH_BUILD_DIR"); }

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string text(std::span<const uint8_t> b) { return std::string(b.begin(), b.end()); }

struct run_result {
  int exit_code;
  std::string output;
};

// A mesh for one test: nats-server, the collector, nodes and adapters started on demand.
class mesh : public ::testing::Test {
 protected:
  void SetUp() override {
    collector_endpoint_ = "tcp://127.0.0.1:" + std::to_string(free_port());
    auto conn = fnmesh::broker::connection::connect({.urls = nats_.url(), .name = "mesh-test"});
    ASSERT_TRUE(conn) << conn.error().message();
    conn_ = std::move(*conn);
    ASSERT_TRUE(fnmesh::broker::bootstrap(*conn_));
    start_collector();
    auto router = fnmesh::broker::reply_router::bind(zmq_);
    ASSERT_TRUE(router);
    router_ = std::move(*router);
    invoker_ = std::make_unique<fnmesh::broker::invoker>(*conn_, nullptr);
  }

  void start_collector() {
    collector_.emplace(child_process::spawn(
        {.program = bin("fnmesh-collector"),
         .args = {"--listen", collector_endpoint_, "--db", (dir_ / "collector.db").string()},
         .log = dir_ / "collector.log"}));
    fnmesh::broker::collector_client probe(zmq_, collector_endpoint_);
    for (int i = 0; i < 100; ++i)
      if (probe.query_activation("0", 100ms)) return;
    FAIL() << "collector did not answer:\n" << collector_->log_text();
  }

  child_process& start_node(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--nats", nats_.url(), "--collector", collector_endpoint_,
                                     "--dir", (dir_ / name).string(), "--node-id", name};
    args.insert(args.end(), extra.begin(), extra.end());
    auto& node = nodes_.emplace(name, child_process::spawn({.program = bin("fnmesh-node"),
                                                            .args = args,
                                                            .log = dir_ / (name + ".log")}))
                     .first->second;
    EXPECT_TRUE(node.wait_for_log("ready", 20s)) << node.log_text();
    return node;
  }

  run_result cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--nats", nats_.url(), "--collector", collector_endpoint_});
    const auto log = dir_ / ("cli-" + std::to_string(++cli_runs_) + ".log");
    auto proc = child_process::spawn({.program = bin("fnmesh"), .args = args, .log = log});
    auto code = proc.wait(60s);
    return {code.value_or(-1), proc.log_text()};
  }

  void deploy(const fs::path& folder) {
    auto r = cli({"deploy", folder.string()});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  // A python3 function written for this test.
  fs::path write_function(const std::string& name, const std::string& manifest_extra,
                          const std::string& body) {
    const auto folder = dir_ / ("fn-" + name);
    fs::create_directories(folder);
    std::ofstream(folder / "fnmesh.yml") << "functions:\n  " << name
                                         << ":\n    runtime: python3\n    handler: handler.handle\n"
                                         << manifest_extra;
    std::ofstream(folder / "handler.py") << body;
    return folder;
  }

  fnmesh::result<fnmesh::broker::published> invoke(const std::string& fn, const std::string& payload,
                                                   bool sync) {
    fnmesh::broker::invocation_request req;
    req.function = fn;
    req.payload = std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
    if (sync) {
      req.reply_endpoint = router_->endpoint();
      req.correlation = ++correlation_;
    }
    return invoker_->invoke(req);
  }

  fnmesh::broker::result_message call(const std::string& fn, const std::string& payload,
                                      std::chrono::milliseconds timeout = 20s) {
    auto published = invoke(fn, payload, true);
    EXPECT_TRUE(published) << published.error().message();
    auto got = router_->receive(timeout);
    EXPECT_TRUE(got) << "no result for " << fn;
    if (!got) return fnmesh::broker::result_message({});
    EXPECT_EQ(p::view(got->get().invocation_id()), published->invocation_id);
    return std::move(*got);
  }

  // Every stored attempt of an invocation: (attempt, status).
  std::vector<std::pair<uint32_t, p::Status>> attempts(const std::string& id) {
    fnmesh::broker::collector_client client(zmq_, collector_endpoint_);
    auto reply = client.query_activation(id, 2s);
    std::vector<std::pair<uint32_t, p::Status>> out;
    if (!reply) return out;
    const auto* report = reply->get().body_as_ActivationReport();
    if (!report || !report->attempts()) return out;
    for (const auto* c : *report->attempts()) out.emplace_back(c->result()->attempt(), c->result()->status());
    return out;
  }

  // Invocations billed per function.
  std::map<std::string, uint64_t> billed() {
    fnmesh::broker::collector_client client(zmq_, collector_endpoint_);
    auto reply = client.query_usage("", "", 0, 0, "function", 2s);
    std::map<std::string, uint64_t> out;
    if (!reply) return out;
    const auto* report = reply->get().body_as_UsageReport();
    if (!report || !report->rows()) return out;
    for (const auto* row : *report->rows()) out[std::string(p::view(row->key()))] = row->invocations();
    return out;
  }

  template <class Pred>
  bool eventually(Pred pred, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return pred();
  }

  fnmesh::test::temp_dir dir_{"fnmesh-mesh"};
  fnmesh::test::nats_server nats_;
  zmq::context_t zmq_{1};
  std::string collector_endpoint_;
  std::unique_ptr<fnmesh::broker::connection> conn_;
  std::optional<child_process> collector_;
  std::map<std::string, child_process> nodes_;
  std::unique_ptr<fnmesh::broker::reply_router> router_;
  std::unique_ptr<fnmesh::broker::invoker> invoker_;
  uint64_t correlation_ = 0;
  int cli_runs_ = 0;
};

TEST_F(mesh, sync_invocations_of_python_native_and_exec_functions_return_their_output) {
  start_node("node-a");
  deploy(source_dir() / "examples/hello");
  deploy(build_dir() / "examples/echo");
  deploy(source_dir() / "examples/wordcount");

  auto hello = call("hello", R"({"name":"mesh"})");
  EXPECT_EQ(hello.get().status(), p::Status::ok) << p::view(hello.get().error());
  EXPECT_NE(text(p::bytes(hello.get().output())).find("mesh"), std::string::npos);
  EXPECT_EQ(p::view(hello.get().node_id()), "node-a");

  auto echo = call("echo", "ping-42");
  EXPECT_EQ(echo.get().status(), p::Status::ok) << p::view(echo.get().error());
  EXPECT_EQ(text(p::bytes(echo.get().output())), "ping-42");

  auto words = call("wordcount", "one two three");
  EXPECT_EQ(words.get().status(), p::Status::ok) << p::view(words.get().error());
  EXPECT_NE(text(p::bytes(words.get().output())).find('3'), std::string::npos);

  // Billed once each, from the node's spool through the collector.
  EXPECT_TRUE(eventually([&] {
    auto b = billed();
    return b["hello"] == 1 && b["echo"] == 1 && b["wordcount"] == 1;
  }, 10s));
}

TEST_F(mesh, an_async_invocation_is_stored_and_its_result_read_by_id) {
  start_node("node-a");
  deploy(source_dir() / "examples/hello");
  auto published = invoke("hello", R"({"name":"later"})", false);
  ASSERT_TRUE(published);
  ASSERT_TRUE(eventually([&] { return attempts(published->invocation_id).size() == 1; }, 15s));
  EXPECT_EQ(attempts(published->invocation_id)[0].second, p::Status::ok);

  auto shown = cli({"result", published->invocation_id});
  EXPECT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_NE(shown.output.find("later"), std::string::npos) << shown.output;
}

TEST_F(mesh, one_event_runs_each_subscribed_function_exactly_once) {
  start_node("node-a");
  auto adapter = child_process::spawn(
      {.program = bin("fnmesh-events"), .args = {"--nats", nats_.url()}, .log = dir_ / "events.log"});
  const std::string handler = "def handle(event, ctx):\n    return {'got': event}\n";
  deploy(write_function("sub-star", "    triggers:\n      events: [\"orders.*\"]\n", handler));
  deploy(write_function("sub-tail", "    triggers:\n      events: [\"orders.>\"]\n", handler));
  deploy(write_function("sub-other", "    triggers:\n      events: [\"payments.*\"]\n", handler));

  auto published = cli({"publish", "orders.created", R"({"id":7})"});
  ASSERT_EQ(published.exit_code, 0) << published.output;
  ASSERT_TRUE(eventually([&] {
    auto b = billed();
    return b["sub-star"] == 1 && b["sub-tail"] == 1;
  }, 20s)) << adapter.log_text();
  std::this_thread::sleep_for(1500ms);  // nothing more arrives later
  auto b = billed();
  EXPECT_EQ(b["sub-star"], 1u);
  EXPECT_EQ(b["sub-tail"], 1u);
  EXPECT_EQ(b.count("sub-other"), 0u);
}

TEST_F(mesh, a_function_past_its_timeout_is_killed_and_reported) {
  start_node("node-a");
  deploy(source_dir() / "examples/testing");
  const auto started = std::chrono::steady_clock::now();
  auto r = call("sleepy", R"({"ms":5000})");
  EXPECT_EQ(r.get().status(), p::Status::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 4s);
  // The node keeps serving: the next call runs in a fresh worker.
  auto next = call("sleepy", R"({"ms":10})");
  EXPECT_EQ(next.get().status(), p::Status::ok) << p::view(next.get().error());
}

TEST_F(mesh, a_crashing_or_failing_handler_reports_its_error) {
  start_node("node-a");
  deploy(source_dir() / "examples/testing");
  auto crashed = call("crashy", "{}");
  EXPECT_EQ(crashed.get().status(), p::Status::crashed);
  EXPECT_NE(p::view(crashed.get().error()).find("about to die"), std::string::npos)
      << p::view(crashed.get().error());
  auto failed = call("failing", "{}");
  EXPECT_EQ(failed.get().status(), p::Status::error);
  EXPECT_NE(p::view(failed.get().error()).find("always raises"), std::string::npos);
}

TEST_F(mesh, an_unknown_function_is_refused_at_once) {
  start_node("node-a");
  auto r = invoke("nope", "{}", true);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), fnmesh::errc::not_found);

  const auto started = std::chrono::steady_clock::now();
  auto shown = cli({"invoke", "nope", "--data", "{}"});
  EXPECT_NE(shown.exit_code, 0);
  EXPECT_NE(shown.output.find("no_such_function"), std::string::npos) << shown.output;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

TEST_F(mesh, garbage_sent_to_the_collector_is_dropped_and_it_keeps_serving) {
  start_node("node-a");
  deploy(build_dir() / "examples/echo");
  zmq::socket_t rogue(zmq_, zmq::socket_type::dealer);
  rogue.connect(collector_endpoint_);
  for (int i = 0; i < 50; ++i) rogue.send(zmq::buffer(std::string(64 + i, char(0xA5))), zmq::send_flags::none);
  auto r = call("echo", "still-here");
  EXPECT_EQ(r.get().status(), p::Status::ok);
  EXPECT_TRUE(eventually([&] { return billed()["echo"] == 1; }, 10s)) << collector_->log_text();
}

TEST_F(mesh, a_collector_killed_under_load_loses_and_doubles_nothing) {
  start_node("node-a");
  deploy(build_dir() / "examples/echo");
  std::vector<std::string> ids;
  for (int i = 0; i < 500; ++i) {
    auto r = invoke("echo", "n" + std::to_string(i), false);
    ASSERT_TRUE(r) << r.error().message();
    ids.push_back(r->invocation_id);
    if (i == 150) collector_->signal(SIGKILL);
  }
  collector_->wait(5s);
  std::this_thread::sleep_for(1s);  // the node keeps running invocations into its spool
  start_collector();
  ASSERT_TRUE(eventually([&] { return billed()["echo"] == 500; }, 60s))
      << "billed " << billed()["echo"] << "\n" << nodes_.at("node-a").log_text();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(billed()["echo"], 500u);
  for (const auto& id : ids) ASSERT_EQ(attempts(id).size(), 1u) << id;
}

TEST_F(mesh, a_node_killed_mid_invocation_is_replaced_and_each_attempt_billed_once) {
  auto& first = start_node("node-a");
  deploy(write_function("slow", "    timeout: 2\n",
                        "import time\ndef handle(event, ctx):\n    time.sleep(1.0)\n"
                        "    return {'attempt': ctx.attempt}\n"));
  auto published = invoke("slow", "{}", true);
  ASSERT_TRUE(published);
  std::this_thread::sleep_for(500ms);  // running on node-a now
  first.signal(SIGKILL);
  first.wait(5s);
  start_node("node-b");

  // JetStream redelivers after the ack wait (timeout + grace); node-b completes attempt 2.
  auto got = router_->receive(30s);
  ASSERT_TRUE(got) << nodes_.at("node-b").log_text();
  EXPECT_EQ(got->get().status(), p::Status::ok) << p::view(got->get().error());
  EXPECT_EQ(p::view(got->get().node_id()), "node-b");
  EXPECT_EQ(got->get().attempt(), 2u);
  EXPECT_EQ(text(p::bytes(got->get().output())), R"({"attempt": 2})");  // what the handler saw
  ASSERT_TRUE(eventually([&] { return attempts(published->invocation_id).size() == 1; }, 10s));
  std::this_thread::sleep_for(1s);
  auto billed_attempts = attempts(published->invocation_id);
  ASSERT_EQ(billed_attempts.size(), 1u);  // attempt 1 died with its node: it never completed
  EXPECT_EQ(billed_attempts[0].first, 2u);
}

TEST_F(mesh, a_draining_node_finishes_its_work_and_leaves_new_work_to_others) {
  auto& draining = start_node("node-a");
  deploy(write_function("slow", "    timeout: 10\n    retries: 0\n",
                        "import time\ndef handle(event, ctx):\n"
                        "    time.sleep(event.get('s', 0))\n    return 'done'\n"));
  auto long_run = invoke("slow", R"({"s":2})", false);
  ASSERT_TRUE(long_run);
  std::this_thread::sleep_for(500ms);  // running on node-a
  start_node("node-b");
  draining.signal(SIGTERM);

  // Work published while node-a drains runs elsewhere, once, never burning its one attempt.
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto r = invoke("slow", "{}", false);
    ASSERT_TRUE(r);
    ids.push_back(r->invocation_id);
  }
  EXPECT_EQ(draining.wait(20s), 0) << draining.log_text();
  for (const auto& id : ids)
    ASSERT_TRUE(eventually([&] { return attempts(id).size() == 1; }, 20s)) << id;
  auto finished = attempts(long_run->invocation_id);
  ASSERT_EQ(finished.size(), 1u);  // the run in progress finished and was billed
  EXPECT_EQ(finished[0].second, p::Status::ok);
}

}  // namespace
