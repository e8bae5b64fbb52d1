// bpf_bench: what node/bpf's CPU meter costs (issue 4), printed as two tables.
// 1. The programs' own run time per event (the kernel's bpf_stats: run_time_ns / run_cnt)
//    while two processes ping-pong a byte over pipes, on one CPU (every switch is task to
//    task) or on two (most switches are to or from the idle task), in a cgroup that is not
//    watched, watched, or watched with a budget armed; beside each, the round trip time,
//    and the same load without the meter loaded.
// 2. What the check on every timer costs a task that never leaves its CPU: the CPU time it
//    needs for a fixed amount of work in a watched, armed cgroup, with and without the
//    meter (interrupt time is charged to the task it interrupts).
// Needs root. build/bench/bpf_bench [--quick]
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "node/bpf/cpu_meter.h"
#include "node/sandbox/cgroups.h"
#include "tests/support/cgroup_child.h"

namespace fnmesh::node {
namespace {

int64_t now_ns(clockid_t clock) {
  timespec t{};
  ::clock_gettime(clock, &t);
  return t.tv_sec * 1'000'000'000LL + t.tv_nsec;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

void pin_to_cpu0() {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  ::sched_setaffinity(0, sizeof set, &set);
}

// Runs `body` in a child born in the cgroup and returns the figure it reports, or nullopt
// if it failed.
template <class F>
std::optional<int64_t> run_in(sandbox_cgroup& cg, F body) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return std::nullopt;
  auto child = test::spawn_in(cg, [&] {
    int64_t v = body();
    return ::write(report[1], &v, sizeof v) == sizeof v ? 0 : 1;
  });
  ::close(report[1]);
  int64_t v = -1;
  bool got = child.pid > 0 && child.release() && ::read(report[0], &v, sizeof v) == sizeof v;
  ::close(report[0]);
  return got && child.exit_code() == 0 ? std::optional(v) : std::nullopt;
}

// ns per round trip of one byte between two processes over two pipes.
int64_t ping_pong(bool one_cpu, int rounds) {
  if (one_cpu) pin_to_cpu0();
  int there[2], back[2];
  if (::pipe(there) != 0 || ::pipe(back) != 0) return -1;
  pid_t partner = ::fork();
  if (partner == 0) {
    ::close(there[1]);
    ::close(back[0]);
    char c;
    while (::read(there[0], &c, 1) == 1 && ::write(back[1], &c, 1) == 1) {
    }
    ::_exit(0);
  }
  ::close(there[0]);
  ::close(back[1]);
  char c = 'x';
  int64_t t0 = now_ns(CLOCK_MONOTONIC);
  for (int i = 0; i < rounds; ++i)
    if (::write(there[1], &c, 1) != 1 || ::read(back[0], &c, 1) != 1) return -1;
  int64_t t = now_ns(CLOCK_MONOTONIC) - t0;
  ::close(there[1]);
  ::waitpid(partner, nullptr, 0);
  return t / rounds;
}

// CPU time of a fixed amount of work on CPU 0.
int64_t spin_work(uint64_t iterations) {
  pin_to_cpu0();
  int64_t t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
  volatile uint64_t x = 1;
  for (uint64_t i = 0; i < iterations; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return now_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
}

struct prog_delta {
  double ns_per_run = 0;
  uint64_t runs = 0;
};

std::map<std::string, prog_delta> delta(const std::vector<bpf_prog_stats>& before,
                                        const std::vector<bpf_prog_stats>& after) {
  std::map<std::string, prog_delta> out;
  for (const auto& a : after)
    for (const auto& b : before)
      if (a.name == b.name && a.runs > b.runs)
        out[a.name] = {double(a.run_ns - b.run_ns) / double(a.runs - b.runs), a.runs - b.runs};
  return out;
}

constexpr int64_t an_hour_ns = int64_t(3600) * 1'000'000'000;

int run(bool quick) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bpf_bench needs root\n");
    return 1;
  }
  auto tree = cgroup_tree::open("bpfbench-" + std::to_string(::getpid()));
  if (!tree) {
    std::fprintf(stderr, "cgroups: %s\n", tree.error().message().c_str());
    return 1;
  }
  auto stats = cpu_meter::enable_stats();
  if (!stats) {
    std::fprintf(stderr, "bpf stats: %s\n", stats.error().message().c_str());
    return 1;
  }
  // Failures throw, so that the tree's destructor removes the cgroups.
  auto make = [&](const char* name) {
    auto cg = (*tree)->create(name, {});
    if (!cg) throw std::runtime_error(std::string("cgroup ") + name + ": " + cg.error().message());
    return std::move(*cg);
  };
  // A meter watching `watched`, with an hour's budget armed for `armed` (one of them).
  auto open_meter = [](std::initializer_list<const sandbox_cgroup*> watched, const sandbox_cgroup& armed) {
    auto m = cpu_meter::open({});
    if (!m) throw std::runtime_error("cpu_meter: " + m.error().message());
    result<void> done;
    for (auto* cg : watched)
      if (done) done = (*m)->watch(cgroup_id(cg->v2_fd()).value_or(0));
    if (done) done = (*m)->arm(cgroup_id(armed.v2_fd()).value_or(0), an_hour_ns);
    if (!done) throw std::runtime_error("watch/arm: " + done.error().message());
    return std::move(*m);
  };
  const int rounds = quick ? 20'000 : 100'000;
  std::printf("bpf_bench: load average %s, %ld CPUs\n\n", load_average().c_str(), ::sysconf(_SC_NPROCESSORS_ONLN));

  // ---- 1. per event ----
  auto plain = make("plain"), unwatched = make("unwatched"), watched = make("watched"), armed = make("armed");
  std::printf("%-34s %10s %12s %12s %12s\n", "ping-pong over pipes", "round trip", "on_switch", "switches/s",
              "on_timer");
  auto row = [&](const char* name, sandbox_cgroup& cg, const cpu_meter* m, bool one_cpu) {
    auto before = m ? m->prog_stats() : std::vector<bpf_prog_stats>{};
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    auto rt = run_in(cg, [&] { return ping_pong(one_cpu, rounds); });
    double secs = double(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    std::printf("%-34s %7.2f us", name, rt ? double(*rt) / 1e3 : -1.0);
    if (m) {
      auto d = delta(before, m->prog_stats());
      std::printf(" %9.0f ns %12.0f %9.0f ns", d["on_switch"].ns_per_run, double(d["on_switch"].runs) / secs,
                  d["on_timer"].ns_per_run);
    }
    std::printf("\n");
  };
  for (bool one_cpu : {true, false}) {
    std::string where = one_cpu ? "one CPU" : "two CPUs";
    row(("no meter, " + where).c_str(), plain, nullptr, one_cpu);
    auto m = open_meter({&watched, &armed}, armed);
    row(("unwatched cgroup, " + where).c_str(), unwatched, m.get(), one_cpu);
    row(("watched, " + where).c_str(), watched, m.get(), one_cpu);
    row(("watched + armed, " + where).c_str(), armed, m.get(), one_cpu);
  }

  // ---- 2. the check on every timer ----
  const uint64_t iterations = quick ? 100'000'000 : 300'000'000;
  auto spin = make("spin");
  std::printf("\n%-34s %12s %12s %12s\n", "a task spinning on one CPU", "CPU time", "on_timer", "timers/s");
  for (int i = 0; i < (quick ? 1 : 3); ++i) {
    auto off = run_in(spin, [&] { return spin_work(iterations); });
    std::printf("%-34s %9.1f ms\n", "no meter", off ? double(*off) / 1e6 : -1.0);
    auto m = open_meter({&spin}, spin);
    auto before = m->prog_stats();
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    auto on = run_in(spin, [&] { return spin_work(iterations); });
    double secs = double(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    auto d = delta(before, m->prog_stats());
    std::printf("%-34s %9.1f ms %9.0f ns %12.0f   (%+.2f %%)\n", "watched + armed", on ? double(*on) / 1e6 : -1.0,
                d["on_timer"].ns_per_run, double(d["on_timer"].runs) / secs,
                on && off ? 100.0 * double(*on - *off) / double(*off) : 0.0);
  }
  std::printf("\ntarget: <= 300 ns per context switch (on_switch).\n");
  return 0;
}

}  // namespace
}  // namespace fnmesh::node

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return fnmesh::node::run(quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bpf_bench: %s\n", e.what());
    return 1;
  }
}
