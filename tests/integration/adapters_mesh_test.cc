// The trigger adapters in front of a real mesh (nats-server, collector, a node running real
// sandboxes): an HTTP call with curl, an HTTP callback, a cron schedule and a file dropped
// in a watched folder each run the function, and each is billed exactly once.
#include <gtest/gtest.h>

#include <fstream>
#include <future>

#include "tests/support/child_process.h"
#include "tests/support/eventually.h"
#include "tests/support/http_exchange.h"
#include "tests/support/mesh.h"

namespace {

using namespace std::chrono_literals;
using namespace fnmesh::test;  // the mesh fixture and its helpers
namespace fs = std::filesystem;

class adapters_mesh : public mesh {
 protected:
  child_process& start_adapter(const std::string& name, std::vector<std::string> args) {
    args.insert(args.end(), {"--nats", nats_->url(), "--log-level", "debug"});
    adapters_.push_back(child_process::spawn(
        {.program = bin(name), .args = std::move(args), .log = dir_ / (name + ".log")}));
    return adapters_.back();
  }

  // fnmesh-http with an API key for tenant default; returns its port.
  int start_http() {
    std::ofstream(dir_ / "keys.yml") << "default: [" << key_ << "]\n";
    start_adapter("fnmesh-http", {"--listen", "127.0.0.1:0", "--port-file", (dir_ / "http.port").string(),
                                  "--collector", collector_endpoint_, "--api-keys",
                                  (dir_ / "keys.yml").string(), "--callback-backoff-ms", "100"});
    EXPECT_TRUE(eventually([&] { return fs::exists(dir_ / "http.port"); }, 10s)) << adapters_.back().log_text();
    std::string host_port;
    std::ifstream(dir_ / "http.port") >> host_port;
    return std::stoi(host_port.substr(host_port.rfind(':') + 1));
  }

  std::string curl(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"-sS", "-H", "Authorization: Bearer " + key_};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = child_process::spawn({.program = find_program("curl"), .args = args,
                                   .log = dir_ / ("curl-" + std::to_string(++curls_) + ".log")});
    EXPECT_EQ(p.wait(30s), 0) << p.log_text();
    return p.log_text();
  }

  const std::string key_ = "k-mesh-test-7d41c09e";
  std::vector<child_process> adapters_;
  int curls_ = 0;
};

TEST_F(adapters_mesh, http_sync_and_callback_calls_run_the_function_and_are_billed_once_each) {
  start_node("node-a");
  deploy(build_dir() / "examples/echo");
  const int port = start_http();
  const std::string url = "http://127.0.0.1:" + std::to_string(port);

  EXPECT_EQ(curl({"--data-binary", "ping over http", url + "/function/echo"}), "ping over http");

  callback_receiver receiver(0);
  auto accepted = receiver.accepted();
  const std::string hook = "http://127.0.0.1:" + std::to_string(receiver.port()) + "/done";
  const std::string answer = curl({"-H", "X-Callback-Url: " + hook, "--data-binary", "call me back",
                                         url + "/async-function/echo"});
  EXPECT_NE(answer.find("\"invocation_id\""), std::string::npos) << answer;
  ASSERT_EQ(accepted.wait_for(20s), std::future_status::ready) << adapters_.back().log_text();
  const std::string got = accepted.get();
  EXPECT_TRUE(got.ends_with("\r\n\r\ncall me back")) << got;
  EXPECT_NE(got.find("X-Fnmesh-Status: ok\r\n"), std::string::npos) << got;

  const std::string id = answer.substr(answer.find("\"invocation_id\":\"") + 17, 26);
  ASSERT_TRUE(eventually([&] { return attempts(id).size() == 1; }, 10s));
  const std::string stored = curl({url + "/invocations/" + id});
  EXPECT_NE(stored.find("\"output\":\"call me back\""), std::string::npos) << stored;
  EXPECT_TRUE(eventually([&] { return billed()["echo"] == 2; }, 10s)) << billed()["echo"];
}

TEST_F(adapters_mesh, a_cron_schedule_and_a_dropped_file_run_their_functions) {
  start_node("node-a");
  const fs::path inbox = dir_ / "inbox";
  fs::create_directories(inbox);
  deploy(write_function("tick", "    triggers: {cron: ['@every 1s']}\n",
                        "def handle(event, ctx):\n    return event['tick']\n"));
  deploy(write_function("on-file", "    triggers: {files: ['" + inbox.string() + "']}\n",
                        "def handle(event, ctx):\n    return event['sha256']\n"));
  // Two copies of each: still once per tick and once per file. One cron copy takes its
  // options from a config file, as a daemon under a service manager would.
  std::ofstream(dir_ / "cron.toml") << "nats = \"" << nats_->url() << "\"\nlog-level = \"debug\"\n"
                                    << "metrics-listen = \"127.0.0.1:0\"\n";
  adapters_.push_back(child_process::spawn({.program = bin("fnmesh-cron"),
                                            .args = {"--config", (dir_ / "cron.toml").string()},
                                            .log = dir_ / "fnmesh-cron-config.log"}));
  start_adapter("fnmesh-cron", {});
  for (int copy = 0; copy < 2; ++copy) start_adapter("fnmesh-fswatch", {});
  for (auto& a : adapters_) ASSERT_TRUE(a.wait_for_log("metrics at", 10s)) << a.log_text();

  std::ofstream(inbox / "report.csv") << "a,b\n1,2\n";
  EXPECT_TRUE(eventually([&] { return billed()["on-file"] == 1; }, 20s)) << billed()["on-file"];
  EXPECT_TRUE(eventually([&] { return billed()["tick"] >= 3; }, 20s)) << billed()["tick"];
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(billed()["on-file"], 1u) << "one file, two adapters: run once";
}

}  // namespace
