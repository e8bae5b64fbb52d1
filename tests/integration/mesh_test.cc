// End to end through real processes: an invocation published on NATS runs on a node, the
// caller gets the Result over ZeroMQ, the collector bills it — including when the
// collector or a node is killed mid-stream.
#include <gtest/gtest.h>

#include <csignal>
#include <thread>

#include "common/errc.h"
#include "tests/support/eventually.h"
#include "tests/support/mesh.h"

namespace p = fnmesh::proto;
using namespace std::chrono_literals;
using namespace fnmesh::test;  // the mesh fixture and its helpers

namespace {

std::string text(std::span<const uint8_t> b) { return std::string(b.begin(), b.end()); }

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
  EXPECT_EQ(shown.exit_code, 0) << describe(shown);
  EXPECT_NE(shown.out.find("later"), std::string::npos) << describe(shown);
}

TEST_F(mesh, one_event_runs_each_subscribed_function_exactly_once) {
  start_node("node-a");
  auto adapter = child_process::spawn(
      {.program = bin("fnmesh-events"), .args = {"--nats", nats_->url()}, .log = dir_ / "events.log"});
  const std::string handler = "def handle(event, ctx):\n    return {'got': event}\n";
  deploy(write_function("sub-star", "    triggers:\n      events: [\"orders.*\"]\n", handler));
  deploy(write_function("sub-tail", "    triggers:\n      events: [\"orders.>\"]\n", handler));
  deploy(write_function("sub-other", "    triggers:\n      events: [\"payments.*\"]\n", handler));

  auto published = cli({"publish", "orders.created", R"({"id":7})"});
  ASSERT_EQ(published.exit_code, 0) << describe(published);
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
  EXPECT_NE(shown.err.find("no_such_function"), std::string::npos) << describe(shown);
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

  // JetStream redelivers after the ack wait (timeout + grace); node-b runs attempt 1 again:
  // a node's death does not use up one of the function's attempts.
  auto got = router_->receive(30s);
  ASSERT_TRUE(got) << nodes_.at("node-b").log_text();
  EXPECT_EQ(got->get().status(), p::Status::ok) << p::view(got->get().error());
  EXPECT_EQ(p::view(got->get().node_id()), "node-b");
  EXPECT_EQ(got->get().attempt(), 1u);
  EXPECT_EQ(text(p::bytes(got->get().output())), R"({"attempt": 1})");  // what the handler saw
  ASSERT_TRUE(eventually([&] { return attempts(published->invocation_id).size() == 1; }, 10s));
  std::this_thread::sleep_for(1s);
  auto billed_attempts = attempts(published->invocation_id);
  ASSERT_EQ(billed_attempts.size(), 1u);  // the run that died with its node never completed
  EXPECT_EQ(billed_attempts[0].first, 1u);
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

TEST_F(mesh, a_run_longer_than_the_ack_wait_is_kept_alive_and_never_redelivered) {
  start_node("node-a");
  start_node("node-b");
  // AckWait is capped at 30 s; this run lasts 35 s, so only in-progress acks keep JetStream
  // from handing it to the other node (or back to this one) while it runs.
  deploy(write_function("long", "    timeout: 60\n    retries: 0\n",
                        "import time\ndef handle(event, ctx):\n"
                        "    print('started', ctx.invocation_id, flush=True)\n"
                        "    time.sleep(35)\n    return 'done'\n"));
  auto r = call("long", "{}", 60s);
  ASSERT_EQ(r.get().status(), p::Status::ok) << p::view(r.get().error());
  const std::string id(p::view(r.get().invocation_id()));
  auto logs = cli({"logs", "long", "-n", "100"});
  size_t starts = 0;
  for (size_t at = logs.out.find("started " + id); at != std::string::npos;
       at = logs.out.find("started " + id, at + 1))
    ++starts;
  EXPECT_EQ(starts, 1u) << logs.out;
  for (auto& [name, node] : nodes_)
    EXPECT_EQ(node.log_text().find("delivered again"), std::string::npos) << name << ":\n" << node.log_text();
  EXPECT_EQ(attempts(id).size(), 1u);
}
