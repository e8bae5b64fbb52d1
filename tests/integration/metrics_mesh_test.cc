// A node's /metrics as an operator scrapes it, through a real mesh (nats-server, collector,
// fnmesh-node running real sandboxes): CPU seconds per function at least what the function
// burned, kills by reason, invocations by status; several nodes on one machine each find
// a free port, and a taken port is one line at start. The node needs root.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>

#include "common/unique_fd.h"
#include "tests/support/eventually.h"
#include "tests/support/mesh.h"
#include "tests/support/metrics_page.h"
#include "tests/support/privileged.h"

namespace p = fnmesh::proto;
using json = nlohmann::json;
using namespace std::chrono_literals;
using namespace fnmesh::test;

namespace {

class metrics_mesh : public mesh {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "metrics_mesh_test needs root (FNMESH_REQUIRE_PRIVILEGED=1)";
      GTEST_SKIP() << "metrics_mesh_test needs root: fnmesh-node runs sandboxes";
    }
    mesh::SetUp();
  }
};

TEST_F(metrics_mesh, show_cpu_seconds_per_function_and_kills_by_reason) {
  const int port = free_loopback_port();
  auto& node = start_node("node-a", {"--metrics-listen", "127.0.0.1:" + std::to_string(port)});
  EXPECT_NE(node.log_text().find("metrics at http://127.0.0.1:" + std::to_string(port) + "/metrics"),
            std::string::npos)
      << node.log_text();

  const std::string before = http_get(port, "/metrics");
  ASSERT_TRUE(before.starts_with("HTTP/1.1 200 OK\r\n")) << before;
  for (const char* reason : {"cpu_limit", "out_of_memory", "timeout"})
    EXPECT_EQ(sample(before, std::string("fnmesh_node_kills_total{reason=\"") + reason + "\"}"), 0) << before;
  EXPECT_TRUE(http_get(port, "/").starts_with("HTTP/1.1 404 "));

  // 1769 MB buys one whole vCPU, so burning 300 ms of CPU takes about 300 ms.
  deploy(write_function("burn", "    memory: 1769\n    timeout: 10\n",
                        "import time\n"
                        "def handle(event, ctx):\n"
                        "    start = time.process_time_ns()\n"
                        "    while time.process_time_ns() - start < event['ms'] * 1_000_000:\n"
                        "        pass\n"
                        "    return {'cpu_ns': time.process_time_ns() - start}\n"));
  deploy(write_function("sleepy", "    timeout: 1\n",
                        "import time\n"
                        "def handle(event, ctx):\n"
                        "    time.sleep(event['ms'] / 1000)\n"));
  auto burned = call("burn", R"({"ms":300})");
  ASSERT_EQ(burned.get().status(), p::Status::ok) << p::view(burned.get().error()) << node.log_text();
  const auto out = p::bytes(burned.get().output());
  const double burned_s = json::parse(out.begin(), out.end()).at("cpu_ns").get<double>() / 1e9;
  auto slept = call("sleepy", R"({"ms":3000})");
  EXPECT_EQ(slept.get().status(), p::Status::timeout) << p::status_name(slept.get().status());

  // The result goes to the caller before the node spools the attempt and frees its slot:
  // a scrape right after it may still count the invocation as running.
  std::string reply, text;
  EXPECT_TRUE(eventually([&] {
    reply = http_get(port, "/metrics");
    text = reply.substr(reply.find("\r\n\r\n") + 3);  // keeps a "\n" before the first line
    return sample(text, "fnmesh_node_running") == 0;
  }, 5s)) << text;
  ASSERT_TRUE(reply.starts_with("HTTP/1.1 200 OK\r\n")) << reply;
  std::printf("--- GET /metrics after burn (%.3f s of CPU by its own clock) and sleepy (timeout):\n%s---\n",
              burned_s, text.c_str() + 1);
  const double cpu_s = sample(text, R"(fnmesh_node_cpu_seconds_total{tenant="default",function="burn"})");
  // At least what the handler measured (its process only); the Usage also holds the
  // sandbox's other CPU during the invocation, a cold start's runtime start-up included.
  EXPECT_GE(cpu_s, burned_s * 0.99) << text;
  EXPECT_LT(cpu_s, burned_s + 1.0) << text;
  EXPECT_EQ(sample(text, R"(fnmesh_node_invocations_total{tenant="default",function="burn",status="ok"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(fnmesh_node_invocations_total{tenant="default",function="sleepy",status="timeout"})"), 1)
      << text;
  EXPECT_EQ(sample(text, R"(fnmesh_node_kills_total{reason="timeout"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(fnmesh_node_kills_total{reason="cpu_limit"})"), 0) << text;
  EXPECT_EQ(sample(text, R"(fnmesh_node_kills_total{reason="out_of_memory"})"), 0) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"re(\nfnmesh_node_accounting_info\{source="(bpf|cgroup)"\} 1\n)re")))
      << text;
}

TEST_F(metrics_mesh, nodes_on_one_machine_each_take_a_free_port_and_a_taken_one_is_one_line) {
  auto& a = start_node("node-a");
  auto& b = start_node("node-b");
  const int port_a = logged_metrics_port(a), port_b = logged_metrics_port(b);
  ASSERT_GT(port_a, 0) << a.log_text();
  ASSERT_GT(port_b, 0) << b.log_text();
  EXPECT_NE(port_a, port_b);
  EXPECT_TRUE(http_get(port_a, "/metrics").starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(http_get(port_b, "/metrics").starts_with("HTTP/1.1 200 OK\r\n"));

  const std::string taken = "127.0.0.1:" + std::to_string(port_a);
  auto c = child_process::spawn({.program = bin("fnmesh-node"),
                                 .args = {"--nats", nats_->url(), "--collector", collector_endpoint_,
                                          "--dir", (dir_ / "node-c").string(), "--node-id", "node-c",
                                          "--metrics-listen", taken},
                                 .log = dir_ / "node-c.log"});
  EXPECT_EQ(c.wait(20s), 1) << c.log_text();
  EXPECT_EQ(c.log_text(), "fnmesh-node: cannot serve /metrics on " + taken + ": Address already in use\n");

  auto help = child_process::spawn({.program = bin("fnmesh-node"), .args = {"--help"}, .log = dir_ / "help.log"});
  EXPECT_EQ(help.wait(10s), 0);
  EXPECT_NE(help.log_text().find("--metrics-listen"), std::string::npos) << help.log_text();
}

}  // namespace
