// `fnmesh up --cluster 3 --nodes 2` as a user runs it: one command starts a 3-server
// JetStream cluster on loopback and two nodes; streams keep 3 replicas; a function deployed
// and invoked through the CLI still answers after one nats-server is killed; `down` stops
// every process.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "broker/client/connection.h"
#include "broker/client/subjects.h"
#include "tests/support/cli_run.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using fnmesh::test::cli_run;
using fnmesh::test::describe;

namespace {

class cli_cluster : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("FNMESH_HOME", (home_.path() / "home").c_str(), 1);
    for (const char* var : {"FNMESH_NATS", "FNMESH_COLLECTOR_HTTP", "FNMESH_TOKEN"}) ::unsetenv(var);
  }
  void TearDown() override { run({"down"}, 90); }

  cli_run run(const std::vector<std::string>& args, int limit_s = 60) {
    return fnmesh::test::run_shell(fnmesh::test::command_line(fnmesh::test::bin("fnmesh"), args),
                                   home_.path() / ("cli-" + std::to_string(++runs_)), std::chrono::seconds(limit_s));
  }
  json status() {
    auto r = run({"status", "--json"});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    return json::parse(r.out, nullptr, false);
  }

  fnmesh::test::temp_dir home_{"fnmesh-cli-cluster"};
  int runs_ = 0;
};

TEST_F(cli_cluster, up_starts_three_replicated_servers_and_two_nodes_that_survive_one_server) {
  auto up = run({"up", "--cluster", "3", "--nodes", "2", "--ports", "auto"}, 180);
  ASSERT_EQ(up.exit_code, 0) << describe(up);
  EXPECT_NE(up.out.find("node-1, node-2"), std::string::npos) << describe(up);

  json st = status();
  std::map<std::string, pid_t> pids;
  for (const auto& c : st.at("components")) {
    pids[c.at("name").get<std::string>()] = c.at("pid").get<pid_t>();
    EXPECT_TRUE(c.at("alive").get<bool>()) << c.dump();
  }
  for (const char* want : {"nats-server-a", "nats-server-b", "nats-server-c", "fnmesh-collector",
                           "fnmesh-node-1", "fnmesh-node-2"})
    EXPECT_TRUE(pids.contains(want)) << want << "\n" << st.dump(2);
  const std::string urls = st.at("nats").get<std::string>();
  EXPECT_EQ(std::count(urls.begin(), urls.end(), ','), 2) << urls;

  // Every stream and bucket keeps three copies.
  auto conn = fnmesh::broker::connection::connect({.urls = urls, .name = "cli-cluster-test"});
  ASSERT_TRUE(conn) << conn.error().message();
  for (const char* stream : {"FNMESH_INVOKE", "FNMESH_DLQ", "KV_FNMESH_FUNCTIONS", "KV_FNMESH_NODES"}) {
    jsStreamInfo* info = nullptr;
    ASSERT_EQ(js_GetStreamInfo(&info, (*conn)->js(), stream, nullptr, nullptr), NATS_OK) << stream;
    EXPECT_EQ(info->Config->Replicas, 3) << stream;
    jsStreamInfo_Destroy(info);
  }

  auto deploy = run({"deploy", (fnmesh::test::source_dir() / "examples/hello").string()});
  ASSERT_EQ(deploy.exit_code, 0) << describe(deploy);
  auto before = run({"invoke", "hello", "--data", R"({"name":"cluster"})"});
  ASSERT_EQ(before.exit_code, 0) << describe(before);
  EXPECT_NE(before.out.find("cluster"), std::string::npos) << describe(before);

  // One server dies; clients move to the others, which keep every replica.
  ASSERT_EQ(::kill(pids.at("nats-server-a"), SIGKILL), 0);
  bool answered = false;
  for (int i = 0; i < 10 && !answered; ++i) {
    auto after = run({"invoke", "hello", "--data", R"({"name":"survivor"})"});
    answered = after.exit_code == 0 && after.out.find("survivor") != std::string::npos;
    if (!answered) std::this_thread::sleep_for(2s);  // a leader election in progress
  }
  EXPECT_TRUE(answered);
  // FNMESH_NODES may still be electing its own leader: a user would run it again.
  auto nodes = run({"nodes", "--json"});
  for (int i = 0; i < 10 && nodes.exit_code != 0; ++i) {
    std::this_thread::sleep_for(2s);
    nodes = run({"nodes", "--json"});
  }
  ASSERT_EQ(nodes.exit_code, 0) << describe(nodes);
  std::set<std::string> alive;
  for (const auto& n : json::parse(nodes.out)) alive.insert(n.at("node_id").get<std::string>());
  EXPECT_EQ(alive, (std::set<std::string>{"node-1", "node-2"})) << nodes.out;

  auto down = run({"down"}, 90);
  ASSERT_EQ(down.exit_code, 0) << describe(down);
  for (const auto& [name, pid] : pids)
    EXPECT_TRUE(fnmesh::test::eventually([&] { return ::kill(pid, 0) != 0; }, 10s)) << name;
}

}  // namespace
