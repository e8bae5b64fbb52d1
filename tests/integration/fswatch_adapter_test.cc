// fnmesh-fswatch as a user meets it: real adapters watching temp folders, a real
// nats-server, and what reaches each function's queue. A file written and closed, or moved
// in, must invoke each subscribed function exactly once — with two adapters running, in a
// burst, and across a nats-server restart.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "broker/client/code_bundle.h"
#include "broker/client/connection.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "tests/support/bootstrapped_nats.h"
#include "tests/support/child_process.h"
#include "tests/support/eventually.h"
#include "tests/support/function_spec.h"
#include "tests/support/invocation_queue.h"
#include "tests/support/metrics_page.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fnmesh {
namespace {

using test::http_get;
using test::sample;

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using json = nlohmann::json;

// One invocation as the function sees it.
struct seen {
  std::string id;
  proto::Trigger trigger;
  std::string source;
  std::string content_type;
  json payload;
};

std::vector<seen> decode(const std::vector<std::vector<uint8_t>>& buffers) {
  std::vector<seen> out;
  for (const auto& b : buffers) {
    const auto* inv = proto::verified<proto::Invocation>(b);
    if (!inv) continue;
    const auto payload = proto::text(proto::bytes(inv->payload()));
    out.push_back({std::string(proto::view(inv->id())), inv->trigger(),
                   std::string(proto::view(inv->source())),
                   std::string(proto::view(inv->content_type())),
                   json::parse(payload.begin(), payload.end())});
  }
  return out;
}

// Pulls until nothing new arrives for `idle`.
std::vector<seen> drain(test::invocation_queue& q, std::chrono::milliseconds idle = 1s) {
  std::vector<seen> out;
  for (;;) {
    auto got = decode(q.pull(idle));
    if (got.empty()) return out;
    out.insert(out.end(), got.begin(), got.end());
  }
}

void write_file(const fs::path& path, std::string_view content) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd) << path;
  ASSERT_EQ(::write(fd.get(), content.data(), content.size()), ssize_t(content.size()));
}

std::string sha256(std::string_view s) {
  return broker::sha256_hex({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

// Makes FNMESH_INVOKE store only `subject`: a publish to any other function is refused.
void set_invoke_subjects(broker::connection& c, const char* subject) {
  jsStreamInfo* si = nullptr;
  const std::string stream(broker::invoke_stream);
  ASSERT_EQ(js_GetStreamInfo(&si, c.js(), stream.c_str(), nullptr, nullptr), NATS_OK);
  const char* subjects[] = {subject};
  const auto original = std::pair(si->Config->Subjects, si->Config->SubjectsLen);
  si->Config->Subjects = subjects;
  si->Config->SubjectsLen = 1;
  jsStreamInfo* updated = nullptr;
  jsErrCode jerr{};
  const natsStatus s = js_UpdateStream(&updated, c.js(), si->Config, nullptr, &jerr);
  std::tie(si->Config->Subjects, si->Config->SubjectsLen) = original;
  jsStreamInfo_Destroy(si);
  jsStreamInfo_Destroy(updated);
  ASSERT_EQ(s, NATS_OK) << natsStatus_GetText(s) << " js error " << int(jerr);
}

class fswatch_adapter : public test::bootstrapped_nats {
 protected:
  fs::path folder(const std::string& name) {
    fs::create_directories(dir_ / name);
    return dir_ / name;
  }

  void deploy(const std::string& name, std::vector<std::string> files) {
    ASSERT_TRUE(test::deploy_spec(*conn_, test::encode_spec({.name = name,
                                                             .runtime = proto::Runtime::exec,
                                                             .handler = "./run",
                                                             .files = std::move(files)})));
  }

  test::child_process start_adapter(const std::string& log, std::vector<std::string> wait_for) {
    auto p = test::child_process::spawn(
        {.program = test::bin("fnmesh-fswatch"),
         .args = {"--nats", nats_->url(), "--retry-ms", "200"},
         .log = dir_ / log});
    EXPECT_TRUE(p.wait_for_log("metrics at", 10s)) << p.log_text();
    for (const auto& f : wait_for)
      EXPECT_TRUE(p.wait_for_log("watching " + f + "\n", 10s)) << p.log_text();
    return p;
  }

  test::temp_dir dir_{"fswatch-adapter"};
};

TEST_F(fswatch_adapter, a_file_is_reported_once_after_close_and_a_move_in_as_moved_in) {
  const auto in = folder("in");
  deploy("reader", {in.string()});
  test::invocation_queue queue(*conn_, "reader");
  auto adapter = start_adapter("adapter.log", {in.string()});

  const auto path = in / "report.csv";
  {
    unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::write(fd.get(), "hello ", 6), 6);
    // Still open for writing: nothing is reported yet.
    EXPECT_TRUE(queue.pull(700ms).empty()) << adapter.log_text();
    ASSERT_EQ(::write(fd.get(), "world", 5), 5);
  }
  auto got = drain(queue);
  ASSERT_EQ(got.size(), 1u) << adapter.log_text();
  EXPECT_EQ(got[0].trigger, proto::Trigger::file);
  EXPECT_EQ(got[0].source, path.string());
  EXPECT_EQ(got[0].content_type, "application/json");
  EXPECT_EQ(got[0].payload["path"], path.string());
  EXPECT_EQ(got[0].payload["size"], 11);
  EXPECT_EQ(got[0].payload["sha256"], sha256("hello world"));
  EXPECT_EQ(got[0].payload["event"], "created");
  EXPECT_TRUE(std::regex_match(got[0].payload["mtime"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)")))
      << got[0].payload;

  // Written beside the folder, then renamed into it; a new directory is not a file.
  write_file(dir_ / "staged.json", "{}");
  fs::rename(dir_ / "staged.json", in / "moved.json");
  fs::create_directory(in / "sub");
  write_file(in / "sub" / "deeper.txt", "not watched: not recursive");
  got = drain(queue);
  ASSERT_EQ(got.size(), 1u) << adapter.log_text();
  EXPECT_EQ(got[0].payload["path"], (in / "moved.json").string());
  EXPECT_EQ(got[0].payload["event"], "moved_in");
  EXPECT_EQ(got[0].payload["size"], 2);

  const std::string text = http_get(test::logged_metrics_port(adapter), "/metrics");
  EXPECT_EQ(sample(text, R"(fnmesh_fswatch_events_total{event="created"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(fnmesh_fswatch_events_total{event="moved_in"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(fnmesh_fswatch_events_total{event="modified"})"), 0) << text;
  EXPECT_EQ(sample(text, "fnmesh_fswatch_invocations_total"), 2) << text;
  EXPECT_EQ(sample(text, "fnmesh_fswatch_publishes_total"), 2) << text;
  EXPECT_EQ(sample(text, "fnmesh_fswatch_publish_failures_total"), 0) << text;
  EXPECT_EQ(sample(text, "fnmesh_fswatch_overflows_total"), 0) << text;
  EXPECT_EQ(sample(text, "fnmesh_fswatch_watched_folders"), 1) << text;
}

TEST_F(fswatch_adapter, a_burst_of_1000_files_gives_1000_invocations_per_function_with_two_adapters) {
  const auto in = folder("burst");
  deploy("resize", {in.string()});
  deploy("index", {in.string() + "/"});
  test::invocation_queue resize(*conn_, "resize"), index(*conn_, "index");
  auto a = start_adapter("a.log", {in.string()});
  auto b = start_adapter("b.log", {in.string()});

  constexpr int files = 1000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < files; ++i)
    write_file(in / ("f" + std::to_string(i)), "file number " + std::to_string(i));
  // Each adapter publishes one invocation per file and function; the stream keeps one copy.
  for (auto* p : {&a, &b})
    EXPECT_TRUE(test::eventually(
        [&] {
          return sample(http_get(test::logged_metrics_port(*p), "/metrics"),
                        "fnmesh_fswatch_invocations_total") == 2 * files;
        },
        30s))
        << http_get(test::logged_metrics_port(*p), "/metrics");
  std::printf("1000 files written and 2 x 2000 invocations acked in %.2f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  for (auto* q : {&resize, &index}) {
    std::map<std::string, int> by_path;
    std::set<std::string> ids;
    for (const auto& s : drain(*q)) {
      ++by_path[s.payload["path"].get<std::string>()];
      ids.insert(s.id);
    }
    EXPECT_EQ(by_path.size(), size_t(files)) << a.log_text() << b.log_text();
    EXPECT_EQ(ids.size(), size_t(files));
    for (const auto& [path, n] : by_path) EXPECT_EQ(n, 1) << path;
  }
}

TEST_F(fswatch_adapter, a_deploy_while_running_is_watched_and_a_missing_folder_once_it_exists) {
  auto adapter = start_adapter("adapter.log", {});
  const auto late = folder("late");
  deploy("late", {late.string()});
  ASSERT_TRUE(adapter.wait_for_log("watching " + late.string() + "\n", 10s)) << adapter.log_text();
  test::invocation_queue queue(*conn_, "late");
  write_file(late / "a.txt", "a");
  auto got = drain(queue);
  ASSERT_EQ(got.size(), 1u) << adapter.log_text();
  EXPECT_EQ(got[0].payload["path"], (late / "a.txt").string());

  const auto later = dir_ / "not-yet";
  deploy("later", {later.string()});
  ASSERT_TRUE(adapter.wait_for_log("cannot watch " + later.string(), 10s)) << adapter.log_text();
  fs::create_directory(later);
  ASSERT_TRUE(adapter.wait_for_log("watching " + later.string() + "\n", 10s)) << adapter.log_text();
  test::invocation_queue later_queue(*conn_, "later");
  write_file(later / "b.txt", "b");
  got = drain(later_queue);
  ASSERT_EQ(got.size(), 1u) << adapter.log_text();
  EXPECT_EQ(got[0].payload["event"], "created");

  // Removed while watched: dropped, logged once, watched again once it is back.
  fs::remove_all(later);
  ASSERT_TRUE(adapter.wait_for_log(later.string() + " was removed", 10s)) << adapter.log_text();
  fs::create_directory(later);
  ASSERT_TRUE(test::eventually(
      [&] {
        const std::string log = adapter.log_text();
        size_t n = 0;
        for (size_t at = 0; (at = log.find("watching " + later.string() + "\n", at)) !=
                            std::string::npos; ++at)
          ++n;
        return n == 2;
      },
      10s))
      << adapter.log_text();
  write_file(later / "c.txt", "c");
  got = drain(later_queue);
  ASSERT_EQ(got.size(), 1u) << adapter.log_text();
  EXPECT_EQ(got[0].payload["path"], (later / "c.txt").string());
}

TEST_F(fswatch_adapter, a_nats_restart_while_files_arrive_loses_none_and_doubles_none) {
  const auto in = folder("steady");
  deploy("steady", {in.string()});
  auto adapter = start_adapter("adapter.log", {in.string()});

  constexpr int files = 120;
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < files; ++i) {
      write_file(in / ("f" + std::to_string(i)), std::to_string(i));
      written = i + 1;
      std::this_thread::sleep_for(20ms);
    }
  });
  test::eventually([&] { return written >= files / 4; }, 10s);
  nats_->stop();
  // Files keep arriving while NATS is down, longer than the adapter waits for acks (2 s):
  // it must publish them again once NATS is back.
  std::this_thread::sleep_for(2500ms);
  nats_->restart();
  writer.join();

  test::invocation_queue queue(*conn_, "steady");
  std::map<std::string, int> by_path;
  for (const auto& s : drain(queue, 3s)) ++by_path[s.payload["path"].get<std::string>()];
  EXPECT_EQ(by_path.size(), size_t(files)) << adapter.log_text();
  for (const auto& [path, n] : by_path) EXPECT_EQ(n, 1) << path;
  EXPECT_TRUE(adapter.running());
  const std::string text = http_get(test::logged_metrics_port(adapter), "/metrics");
  EXPECT_GT(sample(text, "fnmesh_fswatch_publish_failures_total"), 0) << text;
  EXPECT_GE(sample(text, "fnmesh_fswatch_invocations_total"), files) << text;
}

TEST_F(fswatch_adapter, an_invocation_acked_in_a_failed_round_is_not_published_again) {
  const auto in = folder("both");
  deploy("acked", {in.string()});
  deploy("refused", {in.string()});
  // Every copy put on the wire, duplicates the stream would drop included.
  natsSubscription* wire = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&wire, conn_->nats(), "fnmesh.invoke.default.acked"),
            NATS_OK);
  std::unique_ptr<natsSubscription, decltype(&natsSubscription_Destroy)> owned(
      wire, natsSubscription_Destroy);
  set_invoke_subjects(*conn_, "fnmesh.invoke.default.acked");
  auto adapter = start_adapter("adapter.log", {in.string()});
  const int port = test::logged_metrics_port(adapter);

  // One round: "acked" is stored, "refused" is not; the round is retried for "refused" only.
  write_file(in / "x", "x");
  EXPECT_TRUE(test::eventually([&] {
    return sample(http_get(port, "/metrics"), "fnmesh_fswatch_publish_failures_total") >= 3;
  }, 10s)) << adapter.log_text();
  set_invoke_subjects(*conn_, "fnmesh.invoke.>");
  EXPECT_TRUE(test::eventually([&] {
    return sample(http_get(port, "/metrics"), "fnmesh_fswatch_invocations_total") == 2;
  }, 10s)) << adapter.log_text();

  test::invocation_queue acked(*conn_, "acked"), refused(*conn_, "refused");
  EXPECT_EQ(drain(acked).size(), 1u);
  EXPECT_EQ(drain(refused).size(), 1u);
  // Published once, and once more synchronously to learn it was acked (nats.c does not say
  // which async publish the stream refused): never again in the rounds retried after.
  ASSERT_EQ(natsConnection_Flush(conn_->nats()), NATS_OK);
  int copies = 0;
  ASSERT_EQ(natsSubscription_GetPending(wire, &copies, nullptr), NATS_OK);
  EXPECT_EQ(copies, 2) << adapter.log_text();
}

TEST_F(fswatch_adapter, sigterm_exits_0_and_unreachable_nats_is_one_line_and_exit_1) {
  auto adapter = start_adapter("adapter.log", {});
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(adapter.signal(SIGTERM));
  EXPECT_EQ(adapter.wait(5s), 0) << adapter.log_text();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);

  const std::string nowhere = "nats://127.0.0.1:" + std::to_string(test::free_loopback_port());
  auto lost = test::child_process::spawn(
      {.program = test::bin("fnmesh-fswatch"), .args = {"--nats", nowhere}, .log = dir_ / "lost.log"});
  EXPECT_EQ(lost.wait(10s), 1);
  const std::string text = lost.log_text();
  EXPECT_TRUE(text.starts_with("fnmesh-fswatch: cannot reach NATS at " + nowhere)) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;

  auto help = test::child_process::spawn(
      {.program = test::bin("fnmesh-fswatch"), .args = {"--help"}, .log = dir_ / "help.log"});
  EXPECT_EQ(help.wait(10s), 0);
  EXPECT_NE(help.log_text().find("--retry-ms"), std::string::npos) << help.log_text();
}

}  // namespace
}  // namespace fnmesh
