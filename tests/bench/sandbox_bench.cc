// sandbox_bench: what a sandbox costs (issue 3), printed as one table. Cold starts per
// runtime (run() of a function version no sandbox serves yet, until its outcome), warm
// node <-> sandbox round trips, and /bin/true two ways: bubblewrap (the reference) and an
// `exec` function through the executor. Every figure is a percentile of samples timed one
// by one; nothing goes through NATS.
#include <linux/futex.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "node/sandbox/executor.h"
#include "tests/support/function_spec.h"
#include "tests/support/sandbox_files.h"

namespace fnmesh::node {
namespace {

using test::build_dir;
using test::source_dir;

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

int64_t since_ns(steady::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - t0).count();
}

// One whole CPU, so that a round trip measures the sandbox, not the CFS quota a small
// function runs under (128 MB: 7.2 ms of CPU per 100 ms, and a throttled sandbox waits
// up to the rest of the period).
constexpr uint32_t function_memory_mb = 1769;

// ---- samples and the table ----

struct row {
  std::string name;
  std::vector<int64_t> ns;  // sorted once measured
  std::string error;        // non-empty: the case failed
  int64_t target_p50_ns = 0;
};

int64_t percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = size_t(std::ceil(p / 100.0 * double(sorted.size())));
  return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
}

std::string duration(int64_t ns) {
  char buf[32];
  if (ns < 1'000'000) std::snprintf(buf, sizeof buf, "%.1f us", double(ns) / 1e3);
  else std::snprintf(buf, sizeof buf, "%.2f ms", double(ns) / 1e6);
  return buf;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

void print(const std::vector<row>& rows) {
  std::printf("%-44s %6s %10s %10s %10s %10s  %s\n", "case", "n", "min", "p50", "p99", "max", "target p50");
  for (const auto& r : rows) {
    if (!r.error.empty()) {
      std::printf("%-44s FAILED: %s\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    std::string target;
    if (r.target_p50_ns > 0)
      target = "<= " + duration(r.target_p50_ns) + (percentile(r.ns, 50) <= r.target_p50_ns ? "  met" : "  MISSED");
    std::printf("%-44s %6zu %10s %10s %10s %10s  %s\n", r.name.c_str(), r.ns.size(), duration(r.ns.front()).c_str(),
                duration(percentile(r.ns, 50)).c_str(), duration(percentile(r.ns, 99)).c_str(),
                duration(r.ns.back()).c_str(), target.c_str());
  }
}

void print_ratio(const row& ours, const row& reference) {
  if (!ours.error.empty() || !reference.error.empty()) return;
  std::printf("%-44s p50 %.2f   p99 %.2f\n", (ours.name + " / bwrap").c_str(),
              double(percentile(ours.ns, 50)) / double(percentile(reference.ns, 50)),
              double(percentile(ours.ns, 99)) / double(percentile(reference.ns, 99)));
}

// ---- the executor, driven from this thread ----

// Blocks in the kernel at once: std::atomic::wait() spins first, which on two vCPUs
// steals the CPU from the loop and the sandbox being measured.
void futex_wait(std::atomic<uint32_t>& a, uint32_t old) {
  while (a.load(std::memory_order_acquire) == old)
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&a), FUTEX_WAIT_PRIVATE, old, nullptr, nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>& a) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&a), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

bool use_bpf = true;  // --no-bpf: CPU from cgroups, as where the BPF meter does not load

executor_options options(std::chrono::seconds keep_warm) {
  static int instance = 0;
  return {.sandboxes = test::sandbox_files("sandbox-bench-" + std::to_string(::getpid()) + "-" + std::to_string(++instance),
                                           fs::temp_directory_path() / "fnmesh-sandbox-bench"),
          .keep_warm = keep_warm,
          .bpf = use_bpf};
}

struct function_case {
  const char* label;
  proto::Runtime runtime;
  std::string name, handler;
  fs::path code_dir;
  std::string payload;
};

std::vector<uint8_t> invocation(const std::string& function, const std::string& version, const std::string& payload) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<uint8_t> data(payload.begin(), payload.end());
  b.Finish(proto::CreateInvocationDirect(b, "01BENCH", "bench", function.c_str(), version.c_str(), &data,
                                         "application/json"));
  auto bytes = proto::bytes(b);
  return {bytes.begin(), bytes.end()};
}

// Runs one invocation and waits for its outcome: the time from run() until this thread
// has it.
class driver {
 public:
  explicit driver(std::chrono::seconds keep_warm) : exec_(options(keep_warm)) {}

  struct timed {
    int64_t ns;
    outcome out;
  };

  timed once(const function_case& fc, const std::string& version) {
    auto fn = test::function_record_of({.name = fc.name,
                                        .tenant = "bench",
                                        .version = version,
                                        .runtime = fc.runtime,
                                        .handler = fc.handler,
                                        .memory_mb = function_memory_mb,
                                        .timeout_s = 30});
    auto inv = invocation(fc.name, version, fc.payload);
    timed t{};
    const uint32_t before = finished_.load(std::memory_order_acquire);
    const auto t0 = steady::now();
    exec_.run(work{.function = std::move(fn),
                   .code_dir = fc.code_dir,
                   .invocation = std::move(inv),
                   .timeout = std::chrono::seconds(30),
                   .done =
                       [this, &t](outcome&& o) {
                         t.out = std::move(o);
                         finished_.fetch_add(1, std::memory_order_release);
                         futex_wake(finished_);
                       }});
    futex_wait(finished_, before);
    t.ns = since_ns(t0);
    return t;
  }

  // Until every reusable sandbox is gone (keep_warm 0 stops them once idle).
  bool wait_until_empty() {
    for (int i = 0; i < 10'000 && exec_.warm_workers() > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return exec_.warm_workers() == 0;
  }

 private:
  std::atomic<uint32_t> finished_{0};
  executor exec_;  // last: destroyed first, while finished_ lives
};

// How long a case samples: this many, or until this much time went by.
struct limit {
  int samples;
  std::chrono::milliseconds time;

  bool more(int taken, steady::time_point t0) const { return taken < samples && steady::now() - t0 < time; }
};

std::string failure_of(const outcome& o, bool want_cold) {
  if (o.status != proto::Status::ok) return std::string(proto::EnumNameStatus(o.status)) + ": " + o.error;
  if (o.cold_start != want_cold) return want_cold ? "not a cold start" : "not a warm invocation";
  return {};
}

// Each sample a first invocation of a new version; the sandbox stops (keep_warm 0) and is
// gone before the next sample starts. On an idle node (`pause` between samples) a cold
// start takes a spare sandbox made ahead; back to back (no pause), the spares being made
// again compete for the two CPUs. The first sample, not counted, warms caches and zygotes.
row cold_starts(driver& d, const function_case& fc, limit lim, std::chrono::milliseconds pause, int64_t target_ns) {
  row r{.name = std::string("cold start ") + fc.label + (pause.count() ? "" : ", back to back"),
        .target_p50_ns = target_ns};
  const auto t0 = steady::now();
  for (int i = -1; r.error.empty() && lim.more(i, t0); ++i) {
    auto t = d.once(fc, "cold-" + std::to_string(i + 1));
    r.error = failure_of(t.out, true);
    if (i >= 0) r.ns.push_back(t.ns);
    if (!d.wait_until_empty()) r.error = "an idle sandbox was not stopped after keep_warm 0";
    std::this_thread::sleep_for(pause);
  }
  std::sort(r.ns.begin(), r.ns.end());
  return r;
}

row warm_round_trips(driver& d, const function_case& fc, limit lim, int64_t target_ns) {
  row r{.name = std::string("warm round trip ") + fc.label, .target_p50_ns = target_ns};
  r.error = failure_of(d.once(fc, "v1").out, true);
  const auto t0 = steady::now();
  for (int i = 0; r.error.empty() && lim.more(i, t0); ++i) {
    auto t = d.once(fc, "v1");
    r.error = failure_of(t.out, false);
    r.ns.push_back(t.ns);
  }
  std::sort(r.ns.begin(), r.ns.end());
  return r;
}

// ---- /bin/true three ways ----

int64_t spawn_and_wait(const std::vector<std::string>& args, std::string& error) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const auto t0 = steady::now();
  pid_t pid = 0;
  if (int rc = ::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ); rc != 0) {
    error = args[0] + ": " + std::strerror(rc);
    return 0;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  const int64_t ns = since_ns(t0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) error = args[0] + " did not exit 0";
  return ns;
}

// Interleaved, one of each per round, so that load from elsewhere hits both alike.
std::vector<row> bin_true(driver& d, limit lim) {
  const std::vector<std::string> bwrap = {"/usr/bin/bwrap", "--unshare-all", "--die-with-parent",
                                          "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                                          "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
                                          "--proc", "/proc", "--dev", "/dev", "/bin/true"};
  std::vector<row> rows = {{.name = "/bin/true in bwrap --unshare-all"}, {.name = "/bin/true as an exec function"}};
  const function_case exec_true{"", proto::Runtime::exec, "true", "/bin/true", source_dir() / "examples", ""};
  const auto t0 = steady::now();
  for (int i = -1; lim.more(i, t0); ++i) {
    int64_t ns[2] = {};
    if (rows[0].error.empty()) ns[0] = spawn_and_wait(bwrap, rows[0].error);
    if (rows[1].error.empty()) {
      auto t = d.once(exec_true, "v1");
      rows[1].error = failure_of(t.out, true);
      ns[1] = t.ns;
    }
    if (i >= 0)
      for (int k = 0; k < 2; ++k) rows[size_t(k)].ns.push_back(ns[k]);
  }
  for (auto& r : rows) std::sort(r.ns.begin(), r.ns.end());
  return rows;
}

int run(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--no-bpf") == 0) {
      use_bpf = false;
    } else {
      std::fprintf(stderr, "usage: sandbox_bench [--quick] [--no-bpf]\n");
      return 2;
    }
  }
  // Each case: so many samples, or its share of about 70 s (a run under a loaded
  // machine stops early rather than taking minutes); --quick: a fifth of both.
  const int scale = quick ? 5 : 1;
  auto lim = [&](int samples, int seconds) {
    return limit{samples / scale, std::chrono::milliseconds(seconds * 1000 / scale)};
  };
  auto ns = [](auto d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); };
  using std::chrono::milliseconds, std::chrono::microseconds;
  const function_case native{"native (echo)", proto::Runtime::native, "echo", "echo",
                             build_dir() / "examples/echo", "{}"};
  const function_case python{"python3 (hello)", proto::Runtime::python3, "hello", "handler.handle",
                             source_dir() / "examples/hello", R"({"name":"bench"})"};
  const function_case nodejs{"nodejs (hello-node)", proto::Runtime::nodejs, "hello-node", "handler.handle",
                             source_dir() / "examples/hello-node", R"({"name":"bench"})"};

  std::printf("sandbox_bench%s%s: %u CPUs, load average %s; functions get %u MB (one CPU)\n", quick ? " --quick" : "",
              use_bpf ? "" : " --no-bpf", std::thread::hardware_concurrency(), load_average().c_str(),
              function_memory_mb);
  std::fflush(stdout);
  std::vector<row> rows;
  {
    driver cold(std::chrono::seconds(0));
    for (auto& r : bin_true(cold, lim(200, 20))) rows.push_back(std::move(r));
    const milliseconds idle(100), none(0);
    rows.push_back(cold_starts(cold, native, lim(200, 15), idle, ns(milliseconds(3))));
    rows.push_back(cold_starts(cold, python, lim(200, 20), idle, ns(milliseconds(10))));
    rows.push_back(cold_starts(cold, nodejs, lim(50, 15), idle, 0));
    rows.push_back(cold_starts(cold, native, lim(100, 5), none, 0));
    rows.push_back(cold_starts(cold, python, lim(100, 5), none, 0));
  }
  {
    driver warm(std::chrono::seconds(300));
    rows.push_back(warm_round_trips(warm, native, lim(5000, 5), ns(microseconds(50))));
    rows.push_back(warm_round_trips(warm, python, lim(5000, 5), ns(microseconds(50))));
  }
  std::printf("\n");
  print(rows);
  std::printf("\nratios, same run:\n");
  print_ratio(rows[1], rows[0]);
  print_ratio(rows[2], rows[0]);
  std::printf("\nload average at the end: %s\n", load_average().c_str());
  return std::all_of(rows.begin(), rows.end(), [](const row& r) { return r.error.empty(); }) ? 0 : 1;
}

}  // namespace
}  // namespace fnmesh::node

int main(int argc, char** argv) { return fnmesh::node::run(argc, argv); }
