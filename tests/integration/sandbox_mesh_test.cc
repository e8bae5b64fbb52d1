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
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "broker/client/collector_client.h"
#include "broker/client/connection.h"
#include "broker/client/invoker.h"
#include "broker/client/reply_router.h"
#include "broker/client/topology.h"
#include "tests/support/child_process.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
using json = nlohmann::json;
using namespace std::chrono_literals;
using fnmesh::test::child_process;

namespace {

fs::path bin(const std::string& name) { return fs::path(std::getenv("FNMESH_BIN_DIR")) / name; }
fs::path source_dir() { return std::getenv("FNMESH_SOURCE_DIR"); }

bool require_privileged() {
  const char* v = std::getenv("FNMESH_REQUIRE_PRIVILEGED");
  return v && std::string_view(v) == "1";
}

std::string text(std::span<const uint8_t> b) { return std::string(b.begin(), b.end()); }

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// A `fnmesh logs` line without its leading timestamp: "<invocation id> <stream> <text>".
std::string without_time(const std::string& line) { return line.substr(line.find(' ') + 1); }

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

struct cli_run {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string describe(const cli_run& r) {
  return "exit " + std::to_string(r.exit_code) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

class sandbox_mesh : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "sandbox_mesh_test needs root (FNMESH_REQUIRE_PRIVILEGED=1)";
      GTEST_SKIP() << "sandbox_mesh_test needs root: fnmesh-node runs sandboxes";
    }
    nats_.emplace();
    collector_endpoint_ = "tcp://127.0.0.1:" + std::to_string(fnmesh::test::free_loopback_port());
    auto conn = fnmesh::broker::connection::connect({.urls = nats_->url(), .name = "sandbox-mesh-test"});
    ASSERT_TRUE(conn) << conn.error().message();
    conn_ = std::move(*conn);
    ASSERT_TRUE(fnmesh::broker::bootstrap(*conn_));
    collector_.emplace(child_process::spawn(
        {.program = bin("fnmesh-collector"),
         .args = {"--listen", collector_endpoint_, "--db", (dir_ / "collector.db").string()},
         .log = dir_ / "collector.log"}));
    fnmesh::broker::collector_client probe(zmq_, collector_endpoint_);
    bool answered = false;
    for (int i = 0; i < 100 && !answered; ++i) answered = bool(probe.query_activation("0", 100ms));
    ASSERT_TRUE(answered) << "collector did not answer:\n" << collector_->log_text();
    auto router = fnmesh::broker::reply_router::bind(zmq_);
    ASSERT_TRUE(router);
    router_ = std::move(*router);
    invoker_ = std::make_unique<fnmesh::broker::invoker>(*conn_, nullptr);
  }

  child_process& start_node(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--nats", nats_->url(), "--collector", collector_endpoint_,
                                     "--dir", (dir_ / name).string(), "--node-id", name};
    args.insert(args.end(), extra.begin(), extra.end());
    auto& node = nodes_.emplace(name, child_process::spawn({.program = bin("fnmesh-node"),
                                                            .args = args,
                                                            .log = dir_ / (name + ".log")}))
                     .first->second;
    EXPECT_TRUE(node.wait_for_log("ready", 20s)) << node.log_text();
    return node;
  }

  // `fnmesh <args>` against this mesh, as a shell runs it: stdout and stderr apart.
  std::string command(const std::vector<std::string>& args) {
    std::string cmd = quote(bin("fnmesh").string());
    for (const auto& a : args) cmd += " " + quote(a);
    return cmd + " --nats " + quote(nats_->url()) + " --collector " + quote(collector_endpoint_) +
           " --home " + quote((dir_ / "home").string());
  }

  // Started now, read with finish(): several can run at once.
  child_process start_cli(const std::vector<std::string>& args, int run) {
    const auto base = dir_ / ("cli-" + std::to_string(run));
    return child_process::spawn(
        {.program = "/bin/sh",
         .args = {"-c", "exec " + command(args) + " 2>" + quote(base.string() + ".err") + " </dev/null"},
         .log = base.string() + ".out"});
  }

  cli_run finish(child_process& proc, int run) {
    const auto base = dir_ / ("cli-" + std::to_string(run));
    const auto code = proc.wait(60s);
    return {code.value_or(-1), slurp(base.string() + ".out"), slurp(base.string() + ".err")};
  }

  cli_run cli(const std::vector<std::string>& args) {
    const int run = ++cli_runs_;
    auto proc = start_cli(args, run);
    return finish(proc, run);
  }

  void deploy(const fs::path& folder) {
    auto r = cli({"deploy", folder.string()});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
  }

  // A python3 function written for this test.
  fs::path write_function(const std::string& name, const std::string& manifest_extra,
                          const std::string& body) {
    const auto folder = dir_ / ("fn-" + name);
    fs::create_directories(folder);
    std::ofstream(folder / "fnmesh.yml") << "functions:\n  " << name
                                         << ":\n    runtime: python3\n    handler: handler.handle\n"
                                         << "    memory: 128\n" << manifest_extra;
    std::ofstream(folder / "handler.py") << body;
    return folder;
  }

  fnmesh::result<fnmesh::broker::published> invoke(const std::string& fn, const std::string& payload) {
    fnmesh::broker::invocation_request req;
    req.function = fn;
    req.payload = std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
    req.reply_endpoint = router_->endpoint();
    req.correlation = ++correlation_;
    return invoker_->invoke(req);
  }

  fnmesh::broker::result_message receive(const std::string& invocation_id, std::chrono::milliseconds timeout) {
    auto got = router_->receive(timeout);
    EXPECT_TRUE(got) << "no result for " << invocation_id;
    if (!got) return fnmesh::broker::result_message({});
    EXPECT_EQ(p::view(got->get().invocation_id()), invocation_id);
    return std::move(*got);
  }

  fnmesh::broker::result_message call(const std::string& fn, const std::string& payload,
                                      std::chrono::milliseconds timeout = 20s) {
    auto published = invoke(fn, payload);
    EXPECT_TRUE(published) << published.error().message();
    if (!published) return fnmesh::broker::result_message({});
    return receive(published->invocation_id, timeout);
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

  // Invocations billed per node.
  std::map<std::string, uint64_t> billed_by_node() {
    fnmesh::broker::collector_client client(zmq_, collector_endpoint_);
    auto reply = client.query_usage("", "", 0, 0, "node", 2s);
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

  std::string node_logs() {
    std::string out;
    for (auto& [name, node] : nodes_) out += "--- " + name + "\n" + node.log_text();
    return out;
  }

  fnmesh::test::temp_dir dir_{"fnmesh-sandbox-mesh"};
  std::optional<fnmesh::test::nats_server> nats_;
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
    by_node = billed_by_node();
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
  deploy(write_function("napper", "    timeout: 15\n",
                        "import time\n"
                        "def handle(event, ctx):\n"
                        "    time.sleep(event['s'])\n"
                        "    return 'rested'\n"));
  // Heartbeats come every 5 s, more than the keep-warm: the call lasts long enough for
  // one to show its sandbox.
  auto published = invoke("napper", R"({"s":6})");
  ASSERT_TRUE(published) << published.error().message();
  std::string warm;
  EXPECT_TRUE(eventually([&] { return (warm = warm_of("node-a")) == "default/napper=1"; }, 7s))
      << "fnmesh nodes shows warm " << warm;
  auto slept = receive(published->invocation_id, 15s);
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
