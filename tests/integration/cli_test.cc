// The fnmesh CLI as a user runs it: `fnmesh up --ports auto` starts a whole local mesh in
// a temp FNMESH_HOME, the examples are deployed and invoked through the CLI, bad input gets
// its one clear line, and `fnmesh down` leaves no process behind. Then billing,
// activations and result against a collector alone, holding attempts whose totals and
// costs are worked out here by hand. And `fnmesh dlq` against a nats-server alone, holding
// dead letters in the format nodes write (plan: issue7-api.md).
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "broker/client/collector_client.h"
#include "broker/client/subjects.h"
#include "common/clock.h"
#include "common/ulid.h"
#include "flatbuffers/proto.h"
#include "tests/support/bootstrapped_nats.h"
#include "tests/support/child_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/eventually.h"
#include "tests/support/function_spec.h"
#include "tests/support/http_exchange.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
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
    ::unsetenv("FNMESH_COLLECTOR_HTTP");
    ::unsetenv("FNMESH_TOKEN");
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

TEST_F(cli, up_writes_the_collector_tokens_and_billing_needs_no_flags) {
  const fs::path home = home_->path() / "home";
  const fs::path tokens = home / "collector-tokens.yml";
  ASSERT_TRUE(fs::exists(tokens));
  EXPECT_EQ(fs::status(tokens).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  const std::string text = slurp(tokens);
  EXPECT_NE(text.find("\nadmin: ["), std::string::npos) << text;
  // The API key of the default tenant reads that tenant's billing too.
  const std::string keys = slurp(home / "api-keys.yml");
  const size_t at = keys.find("default: [");
  ASSERT_NE(at, std::string::npos) << keys;
  const std::string key = keys.substr(at + 10, keys.find(']', at) - at - 10);
  EXPECT_NE(text.find("default: [" + key + "]"), std::string::npos) << text;

  const json status = json::parse(slurp(home / "status.json"));
  EXPECT_TRUE(status.at("collector_http").get<std::string>().starts_with("http://127.0.0.1:")) << status.dump();
  EXPECT_EQ(status.at("collector_tokens").get<std::string>(), tokens.string());
  EXPECT_NE(up_->out.find(status.at("collector_http").get<std::string>()), std::string::npos) << describe(*up_);

  auto billing = run({"billing"});
  ASSERT_EQ(billing.exit_code, 0) << describe(billing);
  EXPECT_TRUE(billing.out.starts_with("FUNCTION ")) << describe(billing);
  EXPECT_EQ(words_of(lines_of(billing.out).back()).at(0), "TOTAL") << describe(billing);
  auto as_tenant = run({"billing", "--token", key});
  EXPECT_EQ(as_tenant.exit_code, 0) << describe(as_tenant);
}

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

  EXPECT_TRUE(eventually(
      [&] { return run({"billing", "--format", "json"}).out.find("\"hello\"") != std::string::npos; }, 15s));
  // The table shows what was used (CPU seconds, peak memory) beside what is billed.
  auto billing = run({"billing", "--function", "hello"});
  ASSERT_EQ(billing.exit_code, 0) << describe(billing);
  const auto table = lines_of(billing.out);
  ASSERT_EQ(table.size(), 3u) << describe(billing);  // header, hello, TOTAL
  const auto header = words_of(table[0]), hello = words_of(table[1]);
  ASSERT_EQ(header, (std::vector<std::string>{"FUNCTION", "INVOCATIONS", "ERRORS", "BILLED_MS", "GB_S", "CPU_S",
                                              "PEAK_MB", "NET_MB", "COLD", "COST_USD"}))
      << describe(billing);
  ASSERT_EQ(hello.size(), header.size()) << describe(billing);
  EXPECT_NE(hello[0].find("hello"), std::string::npos) << describe(billing);
  EXPECT_GT(std::stod(hello[5]), 0.0) << "CPU_S\n" << describe(billing);
  // A python3 sandbox's peak: the interpreter alone is several MB, and it is under its 128 MB.
  EXPECT_GT(std::stod(hello[6]), 1.0) << "PEAK_MB\n" << describe(billing);
  EXPECT_LT(std::stod(hello[6]), 128.0) << "PEAK_MB\n" << describe(billing);
  const json rows = json::parse(run({"billing", "--function", "hello", "--format", "json"}).out).at("rows");
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

// What one attempt the billing tests store says.
struct stored_attempt {
  std::string id;
  uint32_t attempt = 1;
  std::string function;
  p::Status status = p::Status::ok;
  int64_t billed_ms = 0;
  int64_t memory_mb = 128;
  int64_t cpu_ns = 0;
  int64_t net_tx_bytes = 0;
  bool cold_start = false;
  std::string error;
  std::string output;
};

// Five attempts of tenant default, each with a 64 MiB peak over a wall time equal to its
// billed time. Lambda model: billed_ms x MB x 16,666,700 pUSD / 1,024,000 + 200,000 per
// request; usage model: CPU s x 11,244,444 + peak GB-s x 1,234,722 + net GB x 9e10 + 200,000.
const std::vector<stored_attempt> attempts = {
    // lambda 16,866,700; usage 2,811,111 + 77,170 + 87,890,625 + 200,000
    {"01JCLITEST0000000000000001", 1, "resize", p::Status::ok, 1000, 1024, 250'000'000, 1 << 20, true, "", "resized"},
    // lambda 8,533,350; usage 1,124,444 + 38,585 + 200,000
    {"01JCLITEST0000000000000002", 1, "resize", p::Status::error, 500, 1024, 100'000'000, 0, false, "boom: bad image", ""},
    // lambda 408,334; usage 562,222 + 7,717 + 200,000
    {"01JCLITEST0000000000000003", 1, "thumb", p::Status::ok, 100, 128, 50'000'000, 0, false, "", "thumb-1"},
    // lambda 616,668; usage 15,434 + 200,000
    {"01JCLITEST0000000000000004", 1, "thumb", p::Status::timeout, 200, 128, 0, 0, false, "timed out after 3 s", ""},
    // lambda 408,334; usage 7,717 + 200,000
    {"01JCLITEST0000000000000004", 2, "thumb", p::Status::ok, 100, 128, 0, 0, false, "", "thumb-2"},
};
constexpr std::string_view admin_token = "admin-token-0123456789abcdef";

// One second apart, the last finished 10 s ago.
std::vector<uint8_t> completion_of(const stored_attempt& a, uint64_t seq, int64_t finished_ns) {
  flatbuffers::FlatBufferBuilder b;
  const int64_t wall_ns = a.billed_ms * 1'000'000;
  p::Timings t(finished_ns - wall_ns - 1'000'000, finished_ns - wall_ns, finished_ns);
  auto result = p::CreateResult(b, b.CreateString(a.id), a.status,
                                b.CreateVector(reinterpret_cast<const uint8_t*>(a.output.data()), a.output.size()),
                                b.CreateString(a.error), b.CreateString("node-1"), a.cold_start, &t, a.attempt, 0,
                                b.CreateString("text/plain"));
  auto usage = p::CreateUsage(b, b.CreateString(a.id), a.attempt, b.CreateString("default"),
                              b.CreateString(a.function), b.CreateString("node-1"), seq, wall_ns, a.cpu_ns, 0,
                              64 << 20, a.memory_mb << 20, 0, a.net_tx_bytes, a.cold_start, a.billed_ms,
                              p::AccountingSource::rusage, p::Trigger::cli);
  b.Finish(p::CreateCompletion(b, result, usage));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

// A usage row (table words or CSV fields) with GB_S, an exact decimal, as the shortest
// form of its value: "1.500000000" and "1.5" are the same GB-s.
std::vector<std::string> usage_cells(std::vector<std::string> cells) {
  if (cells.size() > 4 && cells[4].find('.') != std::string::npos) {
    while (cells[4].ends_with('0')) cells[4].pop_back();
    if (cells[4].ends_with('.')) cells[4].pop_back();
  }
  return cells;
}

std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> fields;
  std::istringstream in(line);
  for (std::string f; std::getline(in, f, ',');) fields.push_back(f);
  return fields;
}

// A collector alone (no mesh) holding `attempts`, and the CLI pointed at its HTTP API.
class cli_billing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fnmesh::test::temp_dir("fnmesh-cli-billing");
    const fs::path dir = dir_->path();
    std::ofstream(dir / "tokens.yml") << "admin: [" << admin_token << "]\n";
    collector_ = new fnmesh::test::child_process(fnmesh::test::child_process::spawn(
        {.program = fnmesh::test::bin("fnmesh-collector"),
         .args = {"--listen", "tcp://127.0.0.1:0", "--endpoint-file", (dir / "endpoint").string(), "--http-listen",
                  "127.0.0.1:0", "--http-endpoint-file", (dir / "http-endpoint").string(), "--tokens",
                  (dir / "tokens.yml").string(), "--db", (dir / "collector.db").string()},
         .log = dir / "collector.log"}));
    std::string endpoint;
    ASSERT_TRUE(eventually([&] {
      return (std::ifstream(dir / "endpoint") >> endpoint) && (std::ifstream(dir / "http-endpoint") >> url_);
    }, 10s)) << collector_->log_text();
    port_ = std::stoi(url_.substr(url_.rfind(':') + 1));

    // One batch, acknowledged once stored.
    flatbuffers::FlatBufferBuilder b;
    std::vector<flatbuffers::Offset<p::SpooledCompletion>> items;
    const int64_t last_ns = fnmesh::unix_now_ns() - 10'000'000'000;
    for (size_t i = 0; i < attempts.size(); ++i) {
      auto bytes = completion_of(attempts[i], i + 1, last_ns - int64_t(attempts.size() - 1 - i) * 1'000'000'000);
      items.push_back(p::CreateSpooledCompletion(b, i + 1, b.CreateVector(bytes)));
    }
    auto batch = p::CreateCompletionBatch(b, b.CreateString("node-1"), b.CreateVector(items));
    b.Finish(p::CreateCollectorRequest(b, 1, p::RequestBody::CompletionBatch, batch.Union()));
    zmq::context_t zctx(1);
    fnmesh::broker::collector_client client(zctx, endpoint);
    ASSERT_TRUE(eventually([&] { return bool(client.send({b.GetBufferPointer(), b.GetSize()})); }, 10s));
    auto reply = client.receive(10s);
    ASSERT_TRUE(reply) << reply.error().message() << "\n" << collector_->log_text();
    const auto* ack = reply->get().body_as_BatchAck();
    ASSERT_TRUE(ack) << collector_->log_text();
    ASSERT_EQ(ack->stored(), attempts.size()) << collector_->log_text();
  }
  static void TearDownTestSuite() {
    delete collector_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_FALSE(url_.empty()) << "the collector did not start";
    ::unsetenv("FNMESH_COLLECTOR_HTTP");
    ::unsetenv("FNMESH_TOKEN");
  }

  // fnmesh <args> against this collector, with the admin token unless args give one; a
  // home with no status.json.
  static cli_run run(std::vector<std::string> args) {
    static int n = 0;
    const bool has_url = std::find(args.begin(), args.end(), "--collector-http") != args.end();
    const bool has_token = std::find(args.begin(), args.end(), "--token") != args.end();
    if (!has_url) args.insert(args.end(), {"--collector-http", url_});
    if (!has_token) args.insert(args.end(), {"--token", std::string(admin_token)});
    args.insert(args.end(), {"--home", (dir_->path() / "home").string()});
    return fnmesh::test::run_shell(fnmesh::test::command_line(fnmesh::test::bin("fnmesh"), args),
                                   dir_->path() / ("cli-" + std::to_string(++n)));
  }

  // The error text the collector itself answers to GET `target`.
  static std::string collector_error(const std::string& target, int expect_status,
                                     std::string_view token = admin_token) {
    const auto reply = fnmesh::test::http_call(port_, "GET", target, "", true,
                                               "Authorization: Bearer " + std::string(token) + "\r\n");
    EXPECT_EQ(reply.status, expect_status) << reply.body;
    return json::parse(reply.body).at("error").get<std::string>();
  }

  static fnmesh::test::temp_dir* dir_;
  static fnmesh::test::child_process* collector_;
  static std::string url_;
  static int port_;
};
fnmesh::test::temp_dir* cli_billing::dir_ = nullptr;
fnmesh::test::child_process* cli_billing::collector_ = nullptr;
std::string cli_billing::url_;
int cli_billing::port_ = 0;

TEST_F(cli_billing, the_table_has_a_row_per_function_and_the_exact_total) {
  auto r = run({"billing"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 4u) << describe(r);
  using row = std::vector<std::string>;
  EXPECT_EQ(words_of(lines[0]), (row{"FUNCTION", "INVOCATIONS", "ERRORS", "BILLED_MS", "GB_S", "CPU_S", "PEAK_MB",
                                     "NET_MB", "COLD", "COST_USD"}));
  EXPECT_EQ(usage_cells(words_of(lines[1])),
            (row{"resize", "2", "1", "1500", "1.5", "0.350", "64.0", "1.0", "1", "0.000025400050"}));
  EXPECT_EQ(usage_cells(words_of(lines[2])),
            (row{"thumb", "3", "1", "400", "0.05", "0.050", "64.0", "0.0", "0", "0.000001433336"}));
  EXPECT_EQ(usage_cells(words_of(lines[3])),
            (row{"TOTAL", "5", "2", "1900", "1.55", "0.400", "64.0", "1.0", "1", "0.000026833386"}));

  auto by_tenant = run({"billing", "--by", "tenant", "--model", "usage"});
  ASSERT_EQ(by_tenant.exit_code, 0) << describe(by_tenant);
  const auto tenant_lines = lines_of(by_tenant.out);
  ASSERT_EQ(tenant_lines.size(), 3u) << describe(by_tenant);
  EXPECT_EQ(words_of(tenant_lines[0]).at(0), "TENANT");
  EXPECT_EQ(words_of(tenant_lines[1]).at(0), "default");
  EXPECT_EQ(words_of(tenant_lines[2]).back(), "0.000093535025") << describe(by_tenant);
}

TEST_F(cli_billing, json_is_the_collectors_answer_and_csv_has_no_total) {
  auto j = run({"billing", "--format", "json", "--function", "thumb"});
  ASSERT_EQ(j.exit_code, 0) << describe(j);
  const json body = json::parse(j.out);
  ASSERT_EQ(body.at("rows").size(), 1u) << j.out;
  EXPECT_EQ(body.at("total").at("invocations"), 3) << j.out;
  EXPECT_EQ(body.at("total").at("cost_pusd"), 1'433'336) << j.out;
  EXPECT_EQ(body.at("total").at("cost_usd"), "0.000001433336") << j.out;
  const json usage = json::parse(run({"billing", "--format", "json", "--model", "usage"}).out);
  EXPECT_EQ(usage.at("total").at("cost_pusd"), 93'535'025) << usage.dump();

  auto c = run({"billing", "--format", "csv"});
  ASSERT_EQ(c.exit_code, 0) << describe(c);
  const auto lines = lines_of(c.out);
  ASSERT_EQ(lines.size(), 3u) << describe(c);
  using row = std::vector<std::string>;
  EXPECT_EQ(lines[0], "FUNCTION,INVOCATIONS,ERRORS,BILLED_MS,GB_S,CPU_S,PEAK_MB,NET_MB,COLD,COST_USD");
  EXPECT_EQ(usage_cells(csv_fields(lines[1])),
            (row{"resize", "2", "1", "1500", "1.5", "0.350", "64.0", "1.0", "1", "0.000025400050"}));
  EXPECT_EQ(usage_cells(csv_fields(lines[2])),
            (row{"thumb", "3", "1", "400", "0.05", "0.050", "64.0", "0.0", "0", "0.000001433336"}));
}

TEST_F(cli_billing, a_bad_by_or_since_prints_the_collectors_400_text) {
  auto by = run({"billing", "--by", "colour"});
  EXPECT_EQ(by.exit_code, 1) << describe(by);
  EXPECT_EQ(by.out, "");
  EXPECT_EQ(by.err, "fnmesh: " + collector_error("/v1/usage?by=colour", 400) + "\n") << describe(by);
  EXPECT_NE(by.err.find("colour"), std::string::npos) << describe(by);

  auto since = run({"billing", "--since", "last tuesday"});
  EXPECT_EQ(since.exit_code, 1) << describe(since);
  EXPECT_EQ(since.err, "fnmesh: " + collector_error("/v1/usage?since=last%20tuesday", 400) + "\n")
      << describe(since);
}

TEST_F(cli_billing, activations_by_status_newest_first) {
  auto r = run({"activations", "--status", "error"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << describe(r);
  EXPECT_EQ(words_of(lines[0]), (std::vector<std::string>{"ID", "ATTEMPT", "FUNCTION", "STATUS", "NODE", "FINISHED",
                                                          "DURATION", "BILLED_MS", "COLD"}));
  const auto row = words_of(lines[1]);
  ASSERT_GE(row.size(), 5u) << describe(r);
  EXPECT_EQ(row[0], "01JCLITEST0000000000000002");
  EXPECT_EQ(row[2], "default/resize");
  EXPECT_EQ(row[3], "error");
  EXPECT_EQ(row[4], "node-1");

  auto all = run({"activations", "--format", "csv", "--limit", "2"});
  ASSERT_EQ(all.exit_code, 0) << describe(all);
  const auto csv = lines_of(all.out);
  ASSERT_EQ(csv.size(), 3u) << describe(all);
  EXPECT_TRUE(csv[1].starts_with("01JCLITEST0000000000000004,2,default/thumb,ok,node-1,")) << describe(all);
  EXPECT_TRUE(csv[2].starts_with("01JCLITEST0000000000000004,1,default/thumb,timeout,node-1,")) << describe(all);
}

TEST_F(cli_billing, result_shows_the_last_attempt_and_the_earlier_ones) {
  auto r = run({"result", "01JCLITEST0000000000000004"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  const auto has = [&](const std::string& line) { return std::find(lines.begin(), lines.end(), line) != lines.end(); };
  EXPECT_TRUE(has("invocation  01JCLITEST0000000000000004")) << describe(r);
  EXPECT_TRUE(has("function    default/thumb")) << describe(r);
  EXPECT_TRUE(has("status      ok")) << describe(r);
  EXPECT_TRUE(has("attempts    2 stored (last: attempt 2 on node-1)")) << describe(r);
  EXPECT_TRUE(has("  attempt 1  timeout on node-1 after 200.0 ms: timed out after 3 s")) << describe(r);
  EXPECT_TRUE(has("cost        0.000000408334 USD (lambda model), 0.000000207717 USD (usage model)")) << describe(r);
  EXPECT_TRUE(has("output      thumb-2")) << describe(r);

  const json body = json::parse(run({"result", "01JCLITEST0000000000000004", "--json"}).out);
  EXPECT_EQ(body.at("attempts").size(), 2u) << body.dump();

  auto unknown = run({"result", "01JCLITESTNOPE000000000000"});
  EXPECT_EQ(unknown.exit_code, 1) << describe(unknown);
  EXPECT_EQ(unknown.err, "fnmesh: not found: 01JCLITESTNOPE000000000000 (no finished attempt stored yet)\n")
      << describe(unknown);
}

TEST_F(cli_billing, a_wrong_token_prints_the_collectors_401_text) {
  auto r = run({"billing", "--token", "not-a-token-of-this-collector"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_EQ(r.err, "fnmesh: " + collector_error("/v1/usage", 401, "not-a-token-of-this-collector") + "\n")
      << describe(r);
}

TEST_F(cli_billing, a_collector_that_is_down_is_one_line_naming_the_url) {
  const std::string down = "http://127.0.0.1:" + std::to_string(fnmesh::test::free_loopback_port());
  for (const char* command : {"billing", "activations"}) {
    auto r = run({command, "--collector-http", down});
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << describe(r);
    EXPECT_NE(r.err.find(down), std::string::npos) << describe(r);
    EXPECT_NE(r.err.find("is the mesh up? fnmesh status"), std::string::npos) << describe(r);
  }
}

// What one dead letter the dlq tests store says.
struct stored_dead_letter {
  std::string id;
  std::string function;
  std::string payload;
  std::string status = "error";
  std::string error;
  int attempts = 3;
  std::string tenant = "default";
};

// A nats-server alone with fnmesh's streams, dead letters published as a node does, and
// the CLI pointed at it.
class cli_dlq : public fnmesh::test::bootstrapped_nats {
 protected:
  static constexpr int64_t failed_ago_ns = 300'000'000'000;  // 5 min

  // Publishes `d` to fnmesh.dlq.<tenant>.<function>: the Invocation as payload, the
  // failure in headers. Returns its stream sequence.
  uint64_t store(const stored_dead_letter& d) {
    flatbuffers::FlatBufferBuilder b;
    const int64_t now = fnmesh::unix_now_ns();
    b.Finish(p::CreateInvocation(
        b, b.CreateString(d.id), b.CreateString(d.tenant), b.CreateString(d.function), b.CreateString("v1"),
        b.CreateVector(reinterpret_cast<const uint8_t*>(d.payload.data()), d.payload.size()),
        b.CreateString("text/plain"), p::Trigger::http, b.CreateString("/function/" + d.function), 0, 0,
        uint32_t(d.attempts), b.CreateString(d.id), 0, now - 2 * failed_ago_ns));
    const std::string subject = fnmesh::broker::dlq_subject(d.tenant, d.function);
    natsMsg* msg = nullptr;
    EXPECT_EQ(natsMsg_Create(&msg, subject.c_str(), nullptr, reinterpret_cast<const char*>(b.GetBufferPointer()),
                             int(b.GetSize())),
              NATS_OK);
    const std::vector<std::pair<std::string, std::string>> headers = {
        {"Nats-Msg-Id", d.id},
        {"Fnmesh-Status", d.status},
        {"Fnmesh-Error", d.error},
        {"Fnmesh-Attempts", std::to_string(d.attempts)},
        {"Fnmesh-Node", "node-2"},
        {"Fnmesh-Failed-Ns", std::to_string(now - failed_ago_ns)}};
    for (const auto& [k, v] : headers) EXPECT_EQ(natsMsgHeader_Set(msg, k.c_str(), v.c_str()), NATS_OK);
    jsPubAck* ack = nullptr;
    jsErrCode jerr = jsErrCode(0);
    EXPECT_EQ(js_PublishMsg(&ack, conn_->js(), msg, nullptr, &jerr), NATS_OK) << jerr;
    natsMsg_Destroy(msg);
    const uint64_t seq = ack ? ack->Sequence : 0;
    jsPubAck_Destroy(ack);
    return seq;
  }

  cli_run run(std::vector<std::string> args) {
    args.insert(args.end(), {"--nats", nats_->url(), "--home", (nats_->dir() / "home").string()});
    return fnmesh::test::run_shell(fnmesh::test::command_line(fnmesh::test::bin("fnmesh"), args),
                                   nats_->dir() / ("cli-" + std::to_string(++runs_)));
  }

  // The message `seq` of `stream`, or nullptr.
  std::unique_ptr<natsMsg, decltype(&natsMsg_Destroy)> stored(const std::string& stream, uint64_t seq) {
    natsMsg* m = nullptr;
    js_GetMsg(&m, conn_->js(), stream.c_str(), seq, nullptr, nullptr);
    return {m, &natsMsg_Destroy};
  }

  // The ids `dlq ls --json` lists, in its order.
  std::vector<std::string> listed(std::vector<std::string> args = {}) {
    args.insert(args.begin(), {"dlq", "ls", "--json"});
    auto r = run(args);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    std::vector<std::string> ids;
    for (const auto& row : json::parse(r.out)) ids.push_back(row.at("id").get<std::string>());
    return ids;
  }

  int runs_ = 0;
};

const std::string long_error = "Traceback: " + std::string(150, 'x') + " ValueError: bad image";

TEST_F(cli_dlq, ls_lists_them_newest_last_as_a_table_and_as_json) {
  const uint64_t first = store({"01JDEADTEST000000000000001", "resize", "img-1", "error", long_error, 3});
  store({"01JDEADTEST000000000000002", "thumb", "img-2", "timeout", "timed out after 3 s", 2});
  store({"01JDEADTEST000000000000003", "resize", "img-3", "expired", "older than max_event_age (21600 s)", 0});
  store({"01JDEADTEST000000000000004", "resize", "img-4", "error", "boom", 1, "other"});

  auto r = run({"dlq", "ls"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 4u) << describe(r);
  EXPECT_EQ(words_of(lines[0]),
            (std::vector<std::string>{"SEQ", "ID", "FUNCTION", "STATUS", "ATTEMPTS", "FAILED", "ERROR"}));
  const auto row = words_of(lines[1]);
  ASSERT_GE(row.size(), 9u) << describe(r);
  EXPECT_EQ(std::vector<std::string>(row.begin(), row.begin() + 8),
            (std::vector<std::string>{std::to_string(first), "01JDEADTEST000000000000001", "resize", "error", "3",
                                      "5", "min", "ago"}))
      << describe(r);
  // The table cuts the error; the newest is last.
  EXPECT_NE(lines[1].find("Traceback: xxx"), std::string::npos) << describe(r);
  EXPECT_EQ(lines[1].find("ValueError"), std::string::npos) << describe(r);
  EXPECT_TRUE(lines[1].ends_with("…")) << describe(r);
  EXPECT_EQ(words_of(lines[2]).at(3), "timeout") << describe(r);
  EXPECT_EQ(words_of(lines[3]).at(1), "01JDEADTEST000000000000003") << describe(r);
  EXPECT_EQ(words_of(lines[3]).at(4), "0") << describe(r);

  auto j = run({"dlq", "ls", "--json"});
  ASSERT_EQ(j.exit_code, 0) << describe(j);
  const json rows = json::parse(j.out);
  ASSERT_EQ(rows.size(), 3u) << j.out;
  EXPECT_EQ(rows[0].at("seq"), first);
  EXPECT_EQ(rows[0].at("error"), long_error) << "--json has the whole error";
  EXPECT_EQ(rows[0].at("status"), "error");
  EXPECT_EQ(rows[0].at("attempts"), 3);
  EXPECT_EQ(rows[0].at("node"), "node-2");
  EXPECT_EQ(rows[0].at("tenant"), "default");
  EXPECT_NEAR(double(rows[0].at("failed_ns").get<int64_t>()), double(fnmesh::unix_now_ns() - failed_ago_ns), 60e9);

  EXPECT_EQ(listed({"--function", "thumb"}), std::vector<std::string>{"01JDEADTEST000000000000002"});
  EXPECT_EQ(listed({"--limit", "1"}), std::vector<std::string>{"01JDEADTEST000000000000003"});
  EXPECT_EQ(listed({"--tenant", "other"}), std::vector<std::string>{"01JDEADTEST000000000000004"});
  EXPECT_TRUE(listed({"--function", "nothing-failed"}).empty());

  // Listing leaves no consumer on the stream.
  jsStreamInfo* si = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&si, conn_->js(), "FNMESH_DLQ", nullptr, nullptr), NATS_OK);
  EXPECT_EQ(si->State.Consumers, 0);
  jsStreamInfo_Destroy(si);
}

TEST_F(cli_dlq, show_by_seq_and_by_id_prints_headers_and_payload) {
  const uint64_t seq = store({"01JDEADTEST000000000000001", "resize", R"({"image":"cat.png"})", "error", long_error});
  const std::string binary("\x00\x01\xfe\xff", 4);
  store({"01JDEADTEST000000000000002", "resize", binary, "crashed", "killed by signal 11", 1});

  auto r = run({"dlq", "show", std::to_string(seq)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  const auto has = [&](const std::string& line) { return std::find(lines.begin(), lines.end(), line) != lines.end(); };
  EXPECT_TRUE(has("id            01JDEADTEST000000000000001")) << describe(r);
  EXPECT_TRUE(has("function      default/resize")) << describe(r);
  EXPECT_TRUE(has("status        error")) << describe(r);
  EXPECT_TRUE(has("attempts      3")) << describe(r);
  EXPECT_TRUE(has("error         " + long_error)) << describe(r);
  EXPECT_TRUE(has("trigger       http /function/resize")) << describe(r);
  EXPECT_TRUE(has("  Fnmesh-Node: node-2")) << describe(r);
  EXPECT_TRUE(has(R"(payload       {"image":"cat.png"})")) << describe(r);

  auto by_id = run({"dlq", "show", "01JDEADTEST000000000000002", "--json"});
  ASSERT_EQ(by_id.exit_code, 0) << describe(by_id);
  const json j = json::parse(by_id.out);
  EXPECT_EQ(j.at("seq"), seq + 1);
  EXPECT_EQ(j.at("status"), "crashed");
  EXPECT_EQ(j.at("headers").at("Fnmesh-Error"), "killed by signal 11");
  EXPECT_EQ(j.at("headers").at("Fnmesh-Attempts"), "1");
  EXPECT_EQ(j.at("invocation").at("content_type"), "text/plain");
  EXPECT_EQ(j.at("payload_encoding"), "base64");
  EXPECT_EQ(j.at("payload"), "AAH+/w==");

  // Another tenant's message is not this tenant's to see.
  auto other = run({"dlq", "show", std::to_string(seq), "--tenant", "other"});
  EXPECT_EQ(other.exit_code, 1) << describe(other);
  EXPECT_NE(other.err.find("no DLQ message " + std::to_string(seq) + " (tenant other"), std::string::npos)
      << describe(other);
}

TEST_F(cli_dlq, redrive_publishes_a_new_first_attempt_and_removes_the_dead_letter) {
  ASSERT_TRUE(fnmesh::test::deploy_spec(*conn_, fnmesh::test::encode_spec({.name = "resize", .version = "v2"})));
  const uint64_t seq = store({"01JDEADTEST000000000000001", "resize", R"({"image":"cat.png"})", "error", "boom"});
  natsSubscription* doorbell = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&doorbell, conn_->nats(), "fnmesh.doorbell.default.resize"), NATS_OK);
  ASSERT_EQ(natsConnection_Flush(conn_->nats()), NATS_OK);

  auto r = run({"dlq", "redrive", std::to_string(seq)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << describe(r);
  const std::string prefix = "01JDEADTEST000000000000001 -> ";
  ASSERT_TRUE(lines[0].starts_with(prefix)) << describe(r);
  const std::string new_id = lines[0].substr(prefix.size());
  EXPECT_TRUE(fnmesh::is_ulid(new_id)) << new_id;
  EXPECT_EQ(lines[1], "redriven 1 of 1 dead letter(s)");

  EXPECT_EQ(stored("FNMESH_DLQ", seq).get(), nullptr) << "the dead letter is gone";
  natsMsg* raw = nullptr;
  ASSERT_EQ(js_GetLastMsg(&raw, conn_->js(), "FNMESH_INVOKE", "fnmesh.invoke.default.resize", nullptr, nullptr),
            NATS_OK);
  std::unique_ptr<natsMsg, decltype(&natsMsg_Destroy)> invoked(raw, &natsMsg_Destroy);
  const auto* inv = fnmesh::proto::verified<p::Invocation>(
      {reinterpret_cast<const uint8_t*>(natsMsg_GetData(raw)), size_t(natsMsg_GetDataLength(raw))});
  ASSERT_NE(inv, nullptr);
  EXPECT_EQ(p::view(inv->id()), new_id);
  EXPECT_EQ(inv->attempt(), 1u);
  EXPECT_EQ(p::text(p::bytes(inv->payload())), R"({"image":"cat.png"})");
  EXPECT_EQ(p::view(inv->content_type()), "text/plain");
  EXPECT_EQ(inv->trigger(), p::Trigger::http);
  EXPECT_EQ(p::view(inv->source()), "/function/resize");
  EXPECT_EQ(p::view(inv->version()), "v2") << "runs the version deployed now";
  EXPECT_NEAR(double(inv->published_ns()), double(fnmesh::unix_now_ns()), 30e9);
  const char* msg_id = nullptr;
  ASSERT_EQ(natsMsgHeader_Get(raw, "Nats-Msg-Id", &msg_id), NATS_OK);
  EXPECT_EQ(std::string(msg_id), new_id);
  natsMsg* ring = nullptr;
  EXPECT_EQ(natsSubscription_NextMsg(&ring, doorbell, 2000), NATS_OK) << "the doorbell rang";
  natsMsg_Destroy(ring);
  natsSubscription_Destroy(doorbell);

  auto again = run({"dlq", "redrive", std::to_string(seq)});
  EXPECT_EQ(again.exit_code, 1) << describe(again);
  EXPECT_NE(again.err.find("no DLQ message " + std::to_string(seq) + " (tenant default"), std::string::npos)
      << describe(again);
  EXPECT_NE(again.out.find("redriven 0 of 1"), std::string::npos) << describe(again);
}

TEST_F(cli_dlq, redrive_by_function_and_of_a_function_no_longer_deployed) {
  ASSERT_TRUE(fnmesh::test::deploy_spec(*conn_, fnmesh::test::encode_spec({.name = "resize"})));
  store({"01JDEADTEST000000000000001", "resize", "a", "error", "boom"});
  store({"01JDEADTEST000000000000002", "resize", "b", "error", "boom"});
  const uint64_t gone = store({"01JDEADTEST000000000000003", "removed", "c", "no_such_function", "", 0});

  auto r = run({"dlq", "redrive", "--function", "resize"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << describe(r);
  EXPECT_TRUE(lines[0].starts_with("01JDEADTEST000000000000001 -> ")) << describe(r);
  EXPECT_TRUE(lines[1].starts_with("01JDEADTEST000000000000002 -> ")) << describe(r);
  EXPECT_EQ(lines[2], "redriven 2 of 2 dead letter(s)");
  EXPECT_EQ(listed(), std::vector<std::string>{"01JDEADTEST000000000000003"});

  auto refused = run({"dlq", "redrive", "01JDEADTEST000000000000003"});
  EXPECT_EQ(refused.exit_code, 1) << describe(refused);
  EXPECT_NE(refused.err.find("no_such_function: removed"), std::string::npos) << describe(refused);
  EXPECT_NE(stored("FNMESH_DLQ", gone).get(), nullptr) << "it stays in the DLQ";
}

TEST_F(cli_dlq, purge_by_function_removes_only_that_functions) {
  store({"01JDEADTEST000000000000001", "resize", "a", "error", "boom"});
  store({"01JDEADTEST000000000000002", "thumb", "b", "error", "boom"});
  store({"01JDEADTEST000000000000003", "resize", "c", "error", "boom"});
  store({"01JDEADTEST000000000000004", "resize", "d", "error", "boom", 3, "other"});

  auto r = run({"dlq", "purge", "--function", "resize"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "purged 2 dead letter(s) (tenant default, function resize)\n");
  EXPECT_EQ(listed(), std::vector<std::string>{"01JDEADTEST000000000000002"});

  auto all = run({"dlq", "purge", "--all"});
  ASSERT_EQ(all.exit_code, 0) << describe(all);
  EXPECT_EQ(all.out, "purged 1 dead letter(s) (tenant default)\n");
  EXPECT_TRUE(listed().empty());
  EXPECT_EQ(listed({"--tenant", "other"}), std::vector<std::string>{"01JDEADTEST000000000000004"});
}

TEST_F(cli_dlq, bad_arguments_exit_1_with_one_clear_line) {
  store({"01JDEADTEST000000000000001", "resize", "a", "error", "boom"});
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"dlq", "purge"}, "fnmesh: purge needs --function F or --all (it deletes what they select)\n"},
      {{"dlq", "purge", "--function", "resize", "--all"}, "fnmesh: purge: --function and --all exclude each other\n"},
      {{"dlq", "redrive"}, "fnmesh: redrive needs <seq|id> ..., --function F or --all\n"},
      {{"dlq", "redrive", "1", "--all"}, "fnmesh: redrive: give <seq|id> ... or --function/--all, not both\n"},
      {{"dlq", "show", "999"}, "fnmesh: no DLQ message 999 (tenant default; `fnmesh dlq ls` lists them)\n"},
      {{"dlq", "show", "01JDEADTEST000000000000099"},
       "fnmesh: no DLQ message 01JDEADTEST000000000000099 (tenant default; `fnmesh dlq ls` lists them)\n"},
      {{"dlq", "show", "yesterday"},
       "fnmesh: not a DLQ sequence number or invocation id: yesterday (`fnmesh dlq ls` lists both)\n"},
      {{"dlq", "ls", "--function", "Bad_Name"},
       "fnmesh: bad function name: Bad_Name (names are [a-z0-9][a-z0-9-]{0,62})\n"},
  };
  for (const auto& [args, err] : cases) {
    auto r = run(args);
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_EQ(r.err, err) << describe(r);
  }
  EXPECT_EQ(listed(), std::vector<std::string>{"01JDEADTEST000000000000001"}) << "nothing was removed";

  auto help = run({"dlq", "redrive", "--help"});
  EXPECT_EQ(help.exit_code, 0) << describe(help);
  EXPECT_NE(help.out.find("<old id> -> <new id>"), std::string::npos) << describe(help);
}

}  // namespace
