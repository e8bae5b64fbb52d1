// Function logs as a user sees them: lines published by broker::log_publisher (as the node
// does for a handler's stdout/stderr) are stored by FNMESH_LOGS and printed by the real
// `fnmesh logs` binary, against a real nats-server on an ephemeral port.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "broker/client/log_publisher.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "tests/support/child_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/function_spec.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace fnmesh {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr int64_t t0_ns = 1714566896789000000;  // 2024-05-01T12:34:56.789Z

fs::path fnmesh_bin() { return fs::path(std::getenv("FNMESH_BIN_DIR")) / "fnmesh"; }

using test::cli_run;
using test::describe;
using test::lines_of;
using test::quote;
using test::slurp;

class logs : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<test::nats_server>();
    auto c = broker::connection::connect({.urls = server_->url(), .name = "logs-test"});
    ASSERT_TRUE(c) << c.error().message();
    conn_ = std::move(*c);
    ASSERT_TRUE(broker::bootstrap(*conn_));
    for (const char* name : {"chatty", "quiet", "other"})
      ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = name})));
    publisher_ = std::make_unique<broker::log_publisher>(*conn_);
  }

  // Publishes one line of `function` the way the node does for a sandbox's output.
  void print(std::string_view function, std::string_view line, int i,
             proto::LogStream stream = proto::LogStream::stdout,
             std::string_view invocation = "01HZINV0000000000000000000") {
    ASSERT_TRUE(publisher_->publish({.tenant = "default", .function = function, .version = "v1",
                                     .invocation_id = invocation, .node_id = "node-1",
                                     .sandbox = "sb-1", .stream = stream, .line = line,
                                     .time_ns = t0_ns + int64_t(i) * 1'000'000}));
  }

  // Waits until FNMESH_LOGS holds `n` messages.
  void wait_stored(uint64_t n) {
    ASSERT_TRUE(conn_->flush());
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    uint64_t have = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      jsStreamInfo* si = nullptr;
      if (js_GetStreamInfo(&si, conn_->js(), "FNMESH_LOGS", nullptr, nullptr) == NATS_OK) {
        have = si->State.Msgs;
        jsStreamInfo_Destroy(si);
        if (have >= n) return;
      }
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "FNMESH_LOGS holds " << have << " messages, expected " << n;
  }

  // The command line of `fnmesh <args>` against this test's server, with a home of its own.
  std::string command(const std::vector<std::string>& args) {
    return test::command_line(fnmesh_bin(), args) + " --nats " + quote(server_->url()) + " --home " +
           quote((dir_ / "home").string());
  }

  cli_run run(const std::vector<std::string>& args) {
    return test::run_shell(command(args), dir_ / ("run-" + std::to_string(++runs_)), 30s);
  }

  test::temp_dir dir_{"fnmesh-logs"};
  std::unique_ptr<test::nats_server> server_;
  std::unique_ptr<broker::connection> conn_;
  std::unique_ptr<broker::log_publisher> publisher_;
  int runs_ = 0;
};

TEST_F(logs, bootstrap_creates_the_logs_stream_once) {
  ASSERT_TRUE(broker::bootstrap(*conn_));  // idempotent
  jsStreamInfo* si = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&si, conn_->js(), "FNMESH_LOGS", nullptr, nullptr), NATS_OK);
  ASSERT_EQ(si->Config->SubjectsLen, 1);
  EXPECT_STREQ(si->Config->Subjects[0], "fnmesh.logs.>");
  EXPECT_EQ(si->Config->Retention, js_LimitsPolicy);
  EXPECT_EQ(si->Config->Storage, js_FileStorage);
  EXPECT_EQ(si->Config->MaxAge, 24 * 3600 * 1'000'000'000ll);
  EXPECT_EQ(si->Config->MaxBytes, 256ll << 20);
  EXPECT_EQ(si->Config->Discard, js_DiscardOld);
  jsStreamInfo_Destroy(si);
}

TEST_F(logs, prints_the_stored_lines_of_one_function_in_order) {
  print("chatty", "starting up", 0, proto::LogStream::stdout, "");
  print("other", "not mine", 1);
  print("chatty", "hello", 2);
  print("chatty", "oops: something failed", 3, proto::LogStream::stderr);
  print("chatty", "  spaced  out  ", 4);
  wait_stored(5);

  const auto r = run({"logs", "chatty"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{
                                 "2024-05-01T12:34:56.789Z - stdout starting up",
                                 "2024-05-01T12:34:56.791Z 01HZINV0000000000000000000 stdout hello",
                                 "2024-05-01T12:34:56.792Z 01HZINV0000000000000000000 stderr oops: something failed",
                                 "2024-05-01T12:34:56.793Z 01HZINV0000000000000000000 stdout   spaced  out  ",
                             }))
      << describe(r);
  EXPECT_EQ(r.err, "");
}

TEST_F(logs, lines_n_prints_only_the_newest) {
  for (int i = 0; i < 5; ++i) print("chatty", "line " + std::to_string(i), i);
  wait_stored(5);
  auto r = run({"logs", "chatty", "-n", "2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_EQ(lines_of(r.out).size(), 2u) << describe(r);
  EXPECT_TRUE(lines_of(r.out)[0].ends_with(" stdout line 3")) << r.out;
  EXPECT_TRUE(lines_of(r.out)[1].ends_with(" stdout line 4")) << r.out;

  r = run({"logs", "chatty", "--lines", "0"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "");
}

TEST_F(logs, json_is_one_object_per_line) {
  print("chatty", "hello \"world\"", 0, proto::LogStream::stderr);
  print("chatty", "bye", 1, proto::LogStream::stdout, "");
  wait_stored(2);
  const auto r = run({"logs", "chatty", "--json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << describe(r);
  const json first = json::parse(lines[0]), second = json::parse(lines[1]);
  EXPECT_EQ(first.at("line"), "hello \"world\"");
  EXPECT_EQ(first.at("stream"), "stderr");
  EXPECT_EQ(first.at("time"), "2024-05-01T12:34:56.789Z");
  EXPECT_EQ(first.at("time_ns"), t0_ns);
  EXPECT_EQ(first.at("tenant"), "default");
  EXPECT_EQ(first.at("function"), "chatty");
  EXPECT_EQ(first.at("version"), "v1");
  EXPECT_EQ(first.at("invocation_id"), "01HZINV0000000000000000000");
  EXPECT_EQ(first.at("node_id"), "node-1");
  EXPECT_EQ(first.at("sandbox"), "sb-1");
  EXPECT_EQ(second.at("line"), "bye");
  EXPECT_EQ(second.at("invocation_id"), "");
}

TEST_F(logs, follow_prints_new_lines_until_sigterm) {
  for (int i = 0; i < 3; ++i) print("chatty", "old " + std::to_string(i), i);
  wait_stored(3);
  const fs::path out = dir_ / "follow.out", err = dir_ / "follow.err";
  auto child = test::child_process::spawn(
      {.program = "/bin/sh",
       .args = {"-c", "exec " + command({"logs", "chatty", "-f", "-n", "2"}) + " 2>" + quote(err.string())},
       .log = out});
  ASSERT_TRUE(child.wait_for_log(" stdout old 2\n", 10s)) << child.log_text() << slurp(err);

  const auto published = std::chrono::steady_clock::now();
  print("chatty", "new 1", 10);
  print("other", "not mine", 11);
  print("chatty", "new 2", 12, proto::LogStream::stderr);
  ASSERT_TRUE(conn_->flush());
  ASSERT_TRUE(child.wait_for_log(" stderr new 2\n", 5s)) << child.log_text() << slurp(err);
  const auto shown_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - published);
  std::printf("a new line shown after %lld ms\n", static_cast<long long>(shown_ms.count()));

  ASSERT_TRUE(child.signal(SIGTERM));
  EXPECT_EQ(child.wait(5s), std::optional<int>(0)) << slurp(err);
  const auto lines = lines_of(child.log_text());
  ASSERT_EQ(lines.size(), 4u) << child.log_text();
  EXPECT_TRUE(lines[0].ends_with(" stdout old 1"));
  EXPECT_TRUE(lines[1].ends_with(" stdout old 2"));
  EXPECT_TRUE(lines[2].ends_with(" stdout new 1"));
  EXPECT_TRUE(lines[3].ends_with(" stderr new 2"));
  EXPECT_EQ(slurp(err), "");
}

TEST_F(logs, follow_with_no_stored_line_waits_for_the_first) {
  const fs::path out = dir_ / "follow.out";
  auto child = test::child_process::spawn(
      {.program = "/bin/sh", .args = {"-c", "exec " + command({"logs", "quiet", "--follow"})}, .log = out});
  std::this_thread::sleep_for(500ms);  // let it subscribe (lines before are stored anyway)
  print("quiet", "first", 0);
  ASSERT_TRUE(child.wait_for_log(" stdout first\n", 5s)) << child.log_text();
  ASSERT_TRUE(child.signal(SIGINT));
  EXPECT_EQ(child.wait(5s), std::optional<int>(0)) << child.log_text();
}

TEST_F(logs, a_function_with_no_lines_prints_nothing) {
  print("chatty", "hello", 0);
  wait_stored(1);
  const auto r = run({"logs", "quiet"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
}

TEST_F(logs, an_unknown_function_is_an_error) {
  auto r = run({"logs", "nope"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("no_such_function: nope"), std::string::npos) << describe(r);

  r = run({"logs", "chatty", "--tenant", "acme"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("no_such_function: chatty (tenant acme"), std::string::npos) << describe(r);

  r = run({"logs", "chatty", "--since", "yesterday"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("--since"), std::string::npos) << describe(r);

  ASSERT_EQ(js_DeleteStream(conn_->js(), "FNMESH_LOGS", nullptr, nullptr), NATS_OK);
  r = run({"logs", "chatty"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("no stream FNMESH_LOGS on " + server_->url()), std::string::npos) << describe(r);
}

TEST_F(logs, since_keeps_only_recent_lines) {
  print("chatty", "before", 0);
  wait_stored(1);
  std::this_thread::sleep_for(3s);
  print("chatty", "after", 1);
  wait_stored(2);
  auto r = run({"logs", "chatty", "--since", "2s"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_EQ(lines_of(r.out).size(), 1u) << describe(r);
  EXPECT_TRUE(r.out.ends_with(" stdout after\n")) << r.out;
  r = run({"logs", "chatty", "--since", "1h"});
  EXPECT_EQ(lines_of(r.out).size(), 2u) << describe(r);
}

TEST_F(logs, a_flood_is_cut_to_the_rate_and_long_lines_to_16_kib) {
  const std::string long_line(20 << 10, 'x');
  int accepted = 0;
  for (int i = 0; i < 1500; ++i)
    accepted += publisher_->publish({.tenant = "default", .function = "chatty", .version = "v1",
                                     .line = i == 0 ? std::string_view(long_line) : "flood",
                                     .time_ns = t0_ns});
  EXPECT_GE(accepted, 1000);  // the burst, plus what refilled during the loop
  EXPECT_LT(accepted, 1400);  // most of the excess dropped, however slow this machine
  EXPECT_EQ(publisher_->published(), uint64_t(accepted));
  EXPECT_EQ(publisher_->dropped(), uint64_t(1500 - accepted));
  EXPECT_EQ(publisher_->truncated(), 1u);
  // Another function has its own budget.
  print("other", "still heard", 0);
  wait_stored(uint64_t(accepted) + 1);

  const auto r = run({"logs", "chatty", "-n", "5000"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), size_t(accepted));
  EXPECT_EQ(lines[0], "2024-05-01T12:34:56.789Z - stdout " + std::string(16 << 10, 'x'));
}

}  // namespace
}  // namespace fnmesh
