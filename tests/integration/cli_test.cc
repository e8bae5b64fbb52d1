// The fnmesh CLI as a user runs it: `fnmesh up --ports auto` starts a whole local mesh in
// a temp FNMESH_HOME, the examples are deployed and invoked through the CLI, bad input gets
// its one clear line, and `fnmesh down` leaves no process behind.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/cli_run.h"
#include "tests/support/mesh.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using fnmesh::test::cli_run;
using fnmesh::test::describe;
using fnmesh::test::eventually;
using fnmesh::test::lines_of;
using fnmesh::test::slurp;

namespace {

fs::path source_dir() { return std::getenv("FNMESH_SOURCE_DIR"); }
fs::path build_dir() { return std::getenv("FNMESH_BUILD_DIR"); }

bool process_alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ||
         (stat[paren + 2] != 'Z' && stat[paren + 2] != 'X');
}

std::vector<std::string> words_of(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// Processes whose command line or working directory lies under `dir` (daemons, workers).
std::vector<std::string> processes_under(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = slurp(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    std::error_code ec;
    const std::string cwd = fs::read_symlink(entry.path() / "cwd", ec).string();
    if (!process_alive(std::stoi(pid))) continue;
    if (cmdline.find(dir.string()) != std::string::npos || cwd.starts_with(dir.string()))
      found.push_back(pid + ": " + cmdline);
  }
  return found;
}

// One mesh for the whole suite: starting it is the expensive part.
class cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    home_ = new fnmesh::test::temp_dir("fnmesh-cli");
    ::setenv("FNMESH_HOME", (home_->path() / "home").c_str(), 1);
    ::unsetenv("FNMESH_NATS");
    ::unsetenv("FNMESH_COLLECTOR");
    up_ = new cli_run(run({"up", "--ports", "auto"}, 120));
  }
  static void TearDownTestSuite() {
    run({"down"}, 60);  // idempotent: the last test already stopped it
    delete up_;
    delete home_;
  }

  // Runs build/bin/fnmesh with `args`, stdout and stderr apart; killed after `limit_s`.
  static cli_run run(const std::vector<std::string>& args, int limit_s = 60) {
    static int n = 0;
    return fnmesh::test::run_shell(fnmesh::test::command_line(fnmesh::test::bin("fnmesh"), args),
                                   home_->path() / ("cli-" + std::to_string(++n)), std::chrono::seconds(limit_s));
  }

  void SetUp() override { ASSERT_EQ(up_->exit_code, 0) << "fnmesh up failed\n" << describe(*up_); }

  static fnmesh::test::temp_dir* home_;
  static cli_run* up_;
};
fnmesh::test::temp_dir* cli::home_ = nullptr;
cli_run* cli::up_ = nullptr;

TEST_F(cli, status_json_lists_every_component_alive) {
  auto r = run({"status", "--json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const json status = json::parse(r.out);
  EXPECT_TRUE(status.at("running").get<bool>());
  EXPECT_TRUE(status.at("nats").get<std::string>().starts_with("nats://127.0.0.1:"));
  EXPECT_TRUE(status.at("collector").get<std::string>().starts_with("tcp://127.0.0.1:"));
  std::set<std::string> names;
  for (const auto& c : status.at("components")) {
    names.insert(c.at("name").get<std::string>());
    EXPECT_TRUE(c.at("alive").get<bool>()) << c.dump();
    EXPECT_GT(c.at("pid").get<int>(), 0);
    EXPECT_TRUE(fs::exists(c.at("log").get<std::string>())) << c.dump();
    EXPECT_TRUE(fs::exists(home_->path() / "home/run" / (c.at("name").get<std::string>() + ".pid")));
  }
  for (const char* want : {"nats-server", "fnmesh-collector", "fnmesh-node"}) EXPECT_TRUE(names.contains(want)) << want;
  for (const char* adapter : {"fnmesh-http", "fnmesh-events", "fnmesh-cron", "fnmesh-fswatch"}) {
    if (fs::exists(fnmesh::test::bin(adapter))) {
      EXPECT_TRUE(names.contains(adapter)) << adapter;
    }
  }
}

TEST_F(cli, a_second_up_is_refused) {
  auto r = run({"up", "--ports", "auto"});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_NE(r.err.find("already up"), std::string::npos) << describe(r);
}

TEST_F(cli, deploy_and_invoke_hello) {
  auto d = run({"deploy", (source_dir() / "examples/hello").string()});
  ASSERT_EQ(d.exit_code, 0) << describe(d);
  EXPECT_NE(d.out.find("hello"), std::string::npos) << describe(d);
  auto again = run({"deploy", (source_dir() / "examples/hello").string()});
  EXPECT_NE(again.out.find("unchanged"), std::string::npos) << describe(again);

  auto r = run({"invoke", "hello", "--data", R"({"name":"cli-test"})"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("Hello, cli-test!"), std::string::npos) << describe(r);

  auto ls = run({"ls"});
  ASSERT_EQ(ls.exit_code, 0) << describe(ls);
  EXPECT_NE(ls.out.find("hello"), std::string::npos) << describe(ls);
  EXPECT_NE(ls.out.find("python3"), std::string::npos) << describe(ls);

  EXPECT_TRUE(eventually([&] { return run({"billing", "--json"}).out.find("\"hello\"") != std::string::npos; }, 15s));
  // The table shows what was used (CPU seconds, peak memory) beside what is billed.
  auto billing = run({"billing", "--function", "hello"});
  ASSERT_EQ(billing.exit_code, 0) << describe(billing);
  const auto table = lines_of(billing.out);
  ASSERT_EQ(table.size(), 3u) << describe(billing);  // header, hello, TOTAL
  const auto header = words_of(table[0]), hello = words_of(table[1]);
  ASSERT_EQ(header, (std::vector<std::string>{"FUNCTION", "INVOCATIONS", "ERRORS", "BILLED_MS", "GB_S", "CPU_S",
                                              "PEAK_MB", "COLD_STARTS"}))
      << describe(billing);
  ASSERT_EQ(hello.size(), header.size()) << describe(billing);
  EXPECT_NE(hello[0].find("hello"), std::string::npos) << describe(billing);
  EXPECT_GT(std::stod(hello[5]), 0.0) << "CPU_S\n" << describe(billing);
  // A python3 sandbox's peak: the interpreter alone is several MB, and it is under its 128 MB.
  EXPECT_GT(std::stod(hello[6]), 1.0) << "PEAK_MB\n" << describe(billing);
  EXPECT_LT(std::stod(hello[6]), 128.0) << "PEAK_MB\n" << describe(billing);
  const json rows = json::parse(run({"billing", "--function", "hello", "--json"}).out);
  ASSERT_EQ(rows.size(), 1u) << rows.dump();
  EXPECT_NEAR(rows[0].at("peak_memory_bytes").get<double>() / (1 << 20), std::stod(hello[6]), 0.05) << rows.dump();
}

TEST_F(cli, async_invoke_then_result_by_id) {
  const fs::path echo = build_dir() / "examples/echo";
  ASSERT_TRUE(fs::exists(echo / "echo")) << "the native echo example is not built";
  ASSERT_EQ(run({"deploy", echo.string()}).exit_code, 0);
  auto r = run({"invoke", "echo", "--async", "--data", "async-ping"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string id = r.out.substr(0, r.out.find('\n'));
  ASSERT_EQ(id.size(), 26u) << describe(r);
  cli_run shown;
  EXPECT_TRUE(eventually([&] { return (shown = run({"result", id})).exit_code == 0; }, 20s)) << describe(shown);
  EXPECT_NE(shown.out.find("async-ping"), std::string::npos) << describe(shown);
  EXPECT_NE(shown.out.find("ok"), std::string::npos) << describe(shown);
}

TEST_F(cli, an_event_runs_its_subscriber_and_the_result_is_found_by_id) {
  ASSERT_TRUE(fs::exists(fnmesh::test::bin("fnmesh-events"))) << "fnmesh-events is not built";
  ASSERT_EQ(run({"deploy", (source_dir() / "examples/on-order").string()}).exit_code, 0);
  auto p = run({"publish", "orders.created", R"({"id":7,"items":[{"price":2.5,"qty":2}]})"});
  ASSERT_EQ(p.exit_code, 0) << describe(p);
  const std::string tag = "invokes on-order: ";
  const size_t at = p.out.find(tag);
  ASSERT_NE(at, std::string::npos) << describe(p);
  const std::string id = p.out.substr(at + tag.size(), 26);
  cli_run shown;
  EXPECT_TRUE(eventually([&] { return (shown = run({"result", id})).exit_code == 0; }, 30s)) << describe(shown);
  EXPECT_NE(shown.out.find("\"total\": 5.0"), std::string::npos) << describe(shown);
}

TEST_F(cli, an_unknown_function_fails_at_once) {
  auto r = run({"invoke", "no-such-fn", "--data", "{}"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no_such_function: no-such-fn"), std::string::npos) << describe(r);
  EXPECT_LT(r.took, 5s);
}

TEST_F(cli, a_bad_manifest_names_file_line_and_field) {
  const fs::path folder = home_->path() / "bad";
  fs::create_directories(folder);
  std::ofstream(folder / "fnmesh.yml") << "functions:\n  bad:\n    runtime: python3\n    memory: 64\n"
                                          "    handler: handler.handle\n";
  std::ofstream(folder / "handler.py") << "def handle(event, ctx):\n    return event\n";
  auto r = run({"deploy", folder.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err, "fnmesh: " + (folder / "fnmesh.yml").string() +
                       ":4: functions.bad.memory: must be 128-10240 MB, got 64\n")
      << describe(r);
}

TEST_F(cli, unreachable_nats_is_one_line_naming_the_url) {
  auto r = run({"--nats", "nats://127.0.0.1:1", "ls"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nats://127.0.0.1:1"), std::string::npos) << describe(r);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << describe(r);
}

// Last: stops the mesh, then nothing it started may still run.
TEST_F(cli, zz_down_leaves_no_process) {
  auto status = run({"status", "--json"});
  ASSERT_EQ(status.exit_code, 0) << describe(status);
  std::vector<pid_t> pids;
  const json parsed = json::parse(status.out);
  for (const auto& c : parsed.at("components")) pids.push_back(c.at("pid").get<pid_t>());
  ASSERT_FALSE(pids.empty());
  const fs::path home = home_->path() / "home";
  ASSERT_FALSE(processes_under(home).empty());  // nats-server's -sd, the node's --dir

  auto down = run({"down"}, 90);
  ASSERT_EQ(down.exit_code, 0) << describe(down);
  for (pid_t pid : pids) EXPECT_TRUE(eventually([&] { return !process_alive(pid); }, 5s)) << "pid " << pid;
  // Nor any function worker the node started (they run in the node's code cache).
  EXPECT_TRUE(eventually([&] { return processes_under(home).empty(); }, 5s))
      << ::testing::PrintToString(processes_under(home));
  EXPECT_FALSE(fs::exists(home_->path() / "home/status.json"));
  EXPECT_TRUE(fs::is_empty(home_->path() / "home/run"));
  auto after = run({"status"});
  EXPECT_NE(after.exit_code, 0) << describe(after);
}

}  // namespace
