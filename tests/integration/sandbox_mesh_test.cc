// Sandboxed functions through a real mesh (nats-server, collector, fnmesh-node processes
// running every invocation in a real sandbox), as a user sees them: the concurrency cap
// holds mesh-wide, sandboxes are reused warm and stopped after --keep-warm, nodejs runs end
// to end, handler output reaches `fnmesh logs`, and a function past its memory or killing
// itself is reported so. The node needs root.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/support/eventually.h"
#include "tests/support/mesh.h"
#include "tests/support/privileged.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
using json = nlohmann::json;
using namespace std::chrono_literals;
using namespace fnmesh::test;  // the mesh fixture and its helpers

namespace {

std::string text(std::span<const uint8_t> b) { return std::string(b.begin(), b.end()); }

// A `fnmesh logs` line without its leading timestamp: "<invocation id> <stream> <text>".
std::string without_time(const std::string& line) { return line.substr(line.find(' ') + 1); }

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// The mesh with nodes that run sandboxes (root only) and functions of 128 MB.
class sandbox_mesh : public fnmesh::test::mesh {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "sandbox_mesh_test needs root (FNMESH_REQUIRE_PRIVILEGED=1)";
      GTEST_SKIP() << "sandbox_mesh_test needs root: fnmesh-node runs sandboxes";
    }
    mesh::SetUp();
  }

  fs::path write_function(const std::string& name, const std::string& manifest_extra, const std::string& body) {
    return mesh::write_function(name, "    memory: 128\n" + manifest_extra, body);
  }

  // What `fnmesh nodes --json` shows as a node's warm sandboxes ("-" for none).
  std::string warm_of(const std::string& node) {
    const auto r = cli({"nodes", "--json"});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    const auto rows = json::parse(r.out, nullptr, false);
    if (rows.is_array())
      for (const auto& row : rows)
        if (row.value("node_id", "") == node) return row.value("warm", "");
    return "";
  }

  std::string node_logs() {
    std::string out;
    for (auto& [name, node] : nodes_) out += "--- " + name + "\n" + node.log_text();
    return out;
  }
};

TEST_F(sandbox_mesh, ten_callers_at_once_never_have_more_than_concurrency_running) {
  start_node("node-a");
  start_node("node-b");
  deploy(write_function("capped", "    timeout: 10\n    concurrency: 2\n",
                        "import time\n"
                        "def handle(event, ctx):\n"
                        "    start = time.time()\n"
                        "    time.sleep(0.3)\n"
                        "    return {'start': start, 'end': time.time()}\n"));

  const auto started = std::chrono::steady_clock::now();
  std::vector<std::pair<int, child_process>> callers;
  for (int i = 0; i < 10; ++i) {
    const int run = ++cli_runs_;
    callers.emplace_back(run, start_cli({"invoke", "capped", "--data", "{}"}, run));
  }
  std::vector<std::pair<double, int>> edges;  // (unix time, +1 start / -1 end)
  for (auto& [run, caller] : callers) {
    const auto r = finish(caller, run);
    ASSERT_EQ(r.exit_code, 0) << describe(r) << node_logs();
    const auto interval = json::parse(r.out);
    edges.emplace_back(interval.at("start").get<double>(), 1);
    edges.emplace_back(interval.at("end").get<double>(), -1);
  }
  const double took_ms = ms_since(started);
  std::sort(edges.begin(), edges.end());  // an end sorts before a start at the same time
  int running = 0, most = 0;
  for (const auto& [t, delta] : edges) most = std::max(most, running += delta);
  std::printf("10 callers of a 300 ms function with concurrency 2 on 2 nodes: %.0f ms, at most %d at once\n",
              took_ms, most);
  EXPECT_LE(most, 2);
  std::map<std::string, uint64_t> by_node;
  EXPECT_TRUE(eventually([&] {
    by_node = billed("node");
    return by_node["node-a"] + by_node["node-b"] == 10;
  }, 10s));
  std::printf("run on node-a: %llu, node-b: %llu\n", static_cast<unsigned long long>(by_node["node-a"]),
              static_cast<unsigned long long>(by_node["node-b"]));
}

TEST_F(sandbox_mesh, a_python_function_starts_cold_once_then_runs_warm) {
  start_node("node-a");
  deploy(source_dir() / "examples/hello");
  auto t = std::chrono::steady_clock::now();
  auto first = call("hello", R"({"name":"mesh"})");
  const double cold_ms = ms_since(t);
  ASSERT_EQ(first.get().status(), p::Status::ok) << p::view(first.get().error());
  EXPECT_NE(text(p::bytes(first.get().output())).find("Hello, mesh!"), std::string::npos);
  EXPECT_TRUE(first.get().cold_start());
  t = std::chrono::steady_clock::now();
  auto second = call("hello", R"({"name":"again"})");
  std::printf("hello round trip: cold %.1f ms, warm %.1f ms\n", cold_ms, ms_since(t));
  ASSERT_EQ(second.get().status(), p::Status::ok) << p::view(second.get().error());
  EXPECT_NE(text(p::bytes(second.get().output())).find("Hello, again!"), std::string::npos);
  EXPECT_FALSE(second.get().cold_start());
}

TEST_F(sandbox_mesh, the_nodejs_example_greets_and_its_warm_call_is_faster) {
  start_node("node-a");
  deploy(source_dir() / "examples/hello-node");
  auto t = std::chrono::steady_clock::now();
  auto cold = call("hello-node", R"({"name":"Ada"})");
  const double cold_ms = ms_since(t);
  ASSERT_EQ(cold.get().status(), p::Status::ok) << p::view(cold.get().error()) << node_logs();
  const auto greeting = json::parse(text(p::bytes(cold.get().output())));
  EXPECT_EQ(greeting.at("greeting"), "Hello, Ada!");
  EXPECT_EQ(greeting.at("invocation"), p::view(cold.get().invocation_id()));
  EXPECT_TRUE(cold.get().cold_start());

  t = std::chrono::steady_clock::now();
  auto warm = call("hello-node", R"({"name":"Ada"})");
  const double warm_ms = ms_since(t);
  ASSERT_EQ(warm.get().status(), p::Status::ok) << p::view(warm.get().error());
  EXPECT_EQ(json::parse(text(p::bytes(warm.get().output()))).at("greeting"), "Hello, Ada!");
  EXPECT_FALSE(warm.get().cold_start());
  std::printf("hello-node round trip: cold %.1f ms, warm %.1f ms\n", cold_ms, warm_ms);
  EXPECT_LT(warm_ms, cold_ms);
}

TEST_F(sandbox_mesh, fnmesh_logs_shows_handler_output_with_its_invocation_and_stream) {
  start_node("node-a");
  deploy(write_function("chatty", "",
                        "import sys\n"
                        "def handle(event, ctx):\n"
                        "    print('first line', event['n'])\n"
                        "    print('second line', event['n'])\n"
                        "    print('trouble', event['n'], file=sys.stderr)\n"
                        "    return 'done'\n"));
  auto first = call("chatty", R"({"n":1})");
  ASSERT_EQ(first.get().status(), p::Status::ok) << p::view(first.get().error());
  const std::string id1(p::view(first.get().invocation_id()));

  cli_run shown;
  EXPECT_TRUE(eventually([&] {
    shown = cli({"logs", "chatty"});
    return lines_of(shown.out).size() >= 3;
  }, 5s)) << describe(shown);
  ASSERT_EQ(shown.exit_code, 0) << describe(shown);
  std::vector<std::string> lines;
  for (const auto& line : lines_of(shown.out)) lines.push_back(without_time(line));
  // stdout lines keep their order; the stderr line may come before or after them.
  std::vector<std::string> out_lines;
  std::copy_if(lines.begin(), lines.end(), std::back_inserter(out_lines),
               [](const std::string& l) { return l.find(" stdout ") != std::string::npos; });
  EXPECT_EQ(out_lines, (std::vector<std::string>{id1 + " stdout first line 1", id1 + " stdout second line 1"}))
      << describe(shown);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), id1 + " stderr trouble 1"), 1) << describe(shown);
  EXPECT_EQ(lines.size(), 3u) << describe(shown);
  EXPECT_EQ(shown.err, "");

  // -f prints what is stored, then the lines of the next invocation as they come.
  const int run = ++cli_runs_;
  auto follow = start_cli({"logs", "chatty", "-f"}, run);
  ASSERT_TRUE(follow.wait_for_log(" stdout second line 1\n", 10s)) << follow.log_text();
  auto second = call("chatty", R"({"n":2})");
  ASSERT_EQ(second.get().status(), p::Status::ok) << p::view(second.get().error());
  const std::string id2(p::view(second.get().invocation_id()));
  EXPECT_TRUE(follow.wait_for_log(id2 + " stdout second line 2\n", 5s)) << follow.log_text();
  EXPECT_TRUE(follow.wait_for_log(id2 + " stderr trouble 2\n", 5s)) << follow.log_text();
  ASSERT_TRUE(follow.signal(SIGTERM));
  const auto followed = finish(follow, run);
  EXPECT_EQ(followed.exit_code, 0) << describe(followed);
  EXPECT_EQ(lines_of(followed.out).size(), 6u) << describe(followed);
  EXPECT_NE(followed.out.find(id2 + " stdout first line 2\n"), std::string::npos) << describe(followed);
}

TEST_F(sandbox_mesh, an_idle_sandbox_stops_after_keep_warm_and_the_next_call_starts_cold) {
  start_node("node-a", {"--keep-warm", "1"});
  deploy(write_function("napper", "    timeout: 20\n",
                        "import time\n"
                        "def handle(event, ctx):\n"
                        "    time.sleep(event['s'])\n"
                        "    return 'rested'\n"));
  // Heartbeats come every 5 s, more than the keep-warm: the call lasts two of them, so
  // one shows its sandbox even when a loaded machine delays a beat or a `fnmesh nodes`.
  auto published = invoke("napper", R"({"s":11})");
  ASSERT_TRUE(published) << published.error().message();
  std::string warm;
  EXPECT_TRUE(eventually([&] { return (warm = warm_of("node-a")) == "default/napper=1"; }, 12s))
      << "fnmesh nodes shows warm " << warm;
  auto slept = receive(published->invocation_id, 20s);
  EXPECT_EQ(slept.get().status(), p::Status::ok) << p::view(slept.get().error());
  EXPECT_TRUE(slept.get().cold_start());

  const auto idle_from = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return (warm = warm_of("node-a")) == "-"; }, 8s))
      << "fnmesh nodes shows warm " << warm << "\n" << node_logs();
  std::printf("the heartbeat showed no warm sandbox %.0f ms after the call returned (keep-warm 1 s)\n",
              ms_since(idle_from));

  auto next = call("napper", R"({"s":0})");
  EXPECT_EQ(next.get().status(), p::Status::ok) << p::view(next.get().error());
  EXPECT_TRUE(next.get().cold_start());
}

TEST_F(sandbox_mesh, past_its_memory_a_function_is_out_of_memory_and_killing_itself_crashes) {
  start_node("node-a");
  // 128 MB buys 0.07 vCPU (1 vCPU per 1769 MB): faulting in 128 MB takes it ~6 s, so the
  // 3 s default timeout would end it first.
  deploy(write_function("hog", "    timeout: 30\n",
                        "def handle(event, ctx):\n"
                        "    blob = b'x' * (512 << 20)\n"
                        "    return len(blob)\n"));
  deploy(write_function("suicidal", "",
                        "import os, signal\n"
                        "def handle(event, ctx):\n"
                        "    os.kill(os.getpid(), signal.SIGKILL)\n"));

  const auto t = std::chrono::steady_clock::now();
  auto oom = call("hog", "{}", 40s);
  std::printf("allocating 512 MB in 128 MB: %s after %.0f ms\n", p::status_name(oom.get().status()), ms_since(t));
  EXPECT_EQ(oom.get().status(), p::Status::out_of_memory)
      << p::status_name(oom.get().status()) << ": " << p::view(oom.get().error());
  EXPECT_NE(p::view(oom.get().error()).find("128 MB"), std::string::npos) << p::view(oom.get().error());
  auto shown = cli({"invoke", "hog", "--data", "{}"});
  EXPECT_EQ(shown.exit_code, 1) << describe(shown);
  EXPECT_NE(shown.err.find("error: out_of_memory"), std::string::npos) << describe(shown);

  auto crashed = call("suicidal", "{}");
  EXPECT_EQ(crashed.get().status(), p::Status::crashed)
      << p::status_name(crashed.get().status()) << ": " << p::view(crashed.get().error());
  shown = cli({"invoke", "suicidal", "--data", "{}"});
  EXPECT_EQ(shown.exit_code, 1) << describe(shown);
  EXPECT_NE(shown.err.find("error: crashed"), std::string::npos) << describe(shown);
}

}  // namespace
