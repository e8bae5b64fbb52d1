// cpu_meter, as root with real BPF and real cgroups: children born in sandbox cgroups burn,
// sleep or spin, and the meter's figures are held against the cgroup's own (cpuacct.usage,
// or cpu.stat on pure v2) and the child's own CPU clock; budgets kill.
#include "node/bpf/cpu_meter.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "node/sandbox/cgroups.h"
#include "tests/support/cgroup_child.h"
#include "tests/support/privileged.h"

namespace fnmesh::node {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int64_t ms = 1'000'000;

using test::require_privileged;

std::string text_of(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The kernel's own figure for the cgroup: cpuacct.usage (v1), else cpu.stat usage_usec.
int64_t kernel_cpu_ns(const sandbox_cgroup& s) {
  for (const auto& d : s.v1_dirs())
    if (fs::exists(d + "/cpuacct.usage")) return std::stoll(text_of(d + "/cpuacct.usage"));
  auto stat = text_of(s.v2_dir() + "/cpu.stat");
  auto at = stat.find("usage_usec ");
  return at == std::string::npos ? -1 : std::stoll(stat.substr(at + 11)) * 1000;
}

int64_t process_cpu_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1'000'000'000LL + t.tv_nsec;
}

// Spins until the process has used `ns` of CPU in all; returns what it used.
int64_t burn_until(int64_t ns) {
  int64_t used = 0;
  while ((used = process_cpu_ns()) < ns) {
  }
  return used;
}

// Stops the calling child until resume(): its CPU time so far is counted at the switch.
// (raise() would use the tid glibc cached in the parent: after a raw clone3, call kill.)
void stop_self() { ::kill(::getpid(), SIGSTOP); }

using test::spawn_in;

// A pipe the child reports one figure through.
struct report {
  int fds[2] = {-1, -1};
  report() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0); }
  ~report() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  bool send(int64_t v) const { return ::write(fds[1], &v, sizeof v) == sizeof v; }
  int64_t receive() {
    ::close(std::exchange(fds[1], -1));
    int64_t v = -1;
    EXPECT_EQ(::read(fds[0], &v, sizeof v), static_cast<ssize_t>(sizeof v));
    return v;
  }
};

bool exited_ok(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
bool killed(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

class cpu_meter_test : public ::testing::Test {
 protected:
  struct sandbox {
    sandbox_cgroup cg;
    uint64_t id = 0;
  };
  struct figures {
    int64_t meter = 0, kernel = 0;
    figures operator-(const figures& o) const { return {meter - o.meter, kernel - o.kernel}; }
  };

  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "cpu_meter_test needs root (FNMESH_REQUIRE_PRIVILEGED=1)";
      GTEST_SKIP() << "cpu_meter_test needs root";
    }
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // grandchildren come to us
    auto t = cgroup_tree::open("bpftest-" + std::to_string(::getpid()));
    ASSERT_TRUE(t) << t.error().message();
    tree_ = std::move(*t);
    auto m = cpu_meter::open({});
    if (!m) {
      if (require_privileged()) GTEST_FAIL() << m.error().message();
      GTEST_SKIP() << m.error().message();
    }
    meter_ = std::move(*m);
  }

  void TearDown() override {
    tree_.reset();
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  sandbox make(const std::string& name, bool watch = true) {
    sandbox s;
    auto cg = tree_->create(name, {});
    EXPECT_TRUE(cg) << cg.error().message();
    if (!cg) return s;
    s.cg = std::move(*cg);
    auto id = cgroup_id(s.cg.v2_fd());
    EXPECT_TRUE(id) << id.error().message();
    s.id = id.value_or(0);
    if (watch) {
      EXPECT_TRUE(meter_->watch(s.id));
    }
    return s;
  }

  // Both figures once they stop moving: a reaped task's last switch can follow its reaping.
  // The cgroup's figure misses what a child ran before spawn_in() attached it to v1:
  // compare changes from its release.
  figures settled(const sandbox& s) const {
    figures last{-1, -1};
    for (int i = 0; i < 100; ++i) {
      figures now{meter_->cpu_ns(s.id).value_or(-1), kernel_cpu_ns(s.cg)};
      if (now.meter == last.meter && now.kernel == last.kernel) break;
      last = now;
      std::this_thread::sleep_for(5ms);
    }
    return last;
  }

  std::vector<cpu_kill> kills(std::chrono::milliseconds wait) {
    std::vector<cpu_kill> out;
    pollfd p{meter_->events_fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) == 1)
      meter_->drain([&](const cpu_kill& k) { out.push_back(k); });
    return out;
  }

  std::unique_ptr<cgroup_tree> tree_;
  std::unique_ptr<cpu_meter> meter_;
};

TEST_F(cpu_meter_test, api_errors) {
  auto s = make("api");
  struct stat st {};
  ASSERT_EQ(::fstat(s.cg.v2_fd(), &st), 0);
  EXPECT_EQ(s.id, st.st_ino);
  int tmp = ::open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EXPECT_EQ(cgroup_id(tmp).error(), std::errc::not_a_directory);
  ::close(tmp);

  EXPECT_EQ(meter_->cpu_ns(s.id), 0);
  EXPECT_EQ(meter_->watch(s.id).error(), std::errc::file_exists);
  EXPECT_EQ(meter_->arm(s.id, 0).error(), std::errc::invalid_argument);
  EXPECT_TRUE(meter_->disarm(s.id));  // not armed is fine
  EXPECT_TRUE(meter_->arm(s.id, 10 * ms));
  EXPECT_TRUE(meter_->unwatch(s.id));
  EXPECT_EQ(meter_->cpu_ns(s.id).error(), std::errc::no_such_file_or_directory);
  EXPECT_EQ(meter_->arm(s.id, 10 * ms).error(), std::errc::no_such_file_or_directory);
  EXPECT_EQ(meter_->unwatch(s.id).error(), std::errc::no_such_file_or_directory);
  EXPECT_EQ(meter_->drain([](const cpu_kill&) {}), 0u);
}

TEST_F(cpu_meter_test, burning_300ms_matches_the_cgroup_and_the_childs_own_clock) {
  auto s = make("burn");
  report r;
  auto c = spawn_in(s.cg, [&] {
    bool sent = r.send(burn_until(300 * ms));
    stop_self();
    return sent ? 0 : 1;
  });
  auto base = settled(s);
  c.release();
  ASSERT_TRUE(c.wait_stopped());
  int64_t own = r.receive(), at_stop = settled(s).meter;
  c.resume();
  ASSERT_TRUE(exited_ok(c.wait_status()));
  auto d = settled(s) - base;
  std::printf("child's clock %.3f ms, meter %.3f ms; after its exit, since release: meter %.3f ms, cgroup %.3f ms\n",
              own / 1e6, at_stop / 1e6, d.meter / 1e6, d.kernel / 1e6);
  EXPECT_NEAR(at_stop, own, own * 0.01);
  EXPECT_NEAR(d.meter, d.kernel, d.kernel * 0.001);
}

TEST_F(cpu_meter_test, sleeping_300ms_uses_almost_no_cpu) {
  auto s = make("sleep");
  auto c = spawn_in(s.cg, [] {
    timespec t{0, 300 * ms};
    return ::nanosleep(&t, nullptr);
  });
  auto base = settled(s);
  auto start = std::chrono::steady_clock::now();
  c.release();
  ASSERT_TRUE(exited_ok(c.wait_status()));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  auto f = settled(s), d = f - base;
  std::printf("meter %.3f ms (%.3f since release), cgroup %.3f ms since release\n", f.meter / 1e6, d.meter / 1e6,
              d.kernel / 1e6);
  EXPECT_LT(f.meter, 10 * ms);  // its copy-on-write faults and exit: 1-5 ms here
  EXPECT_NEAR(d.meter, d.kernel, 100'000);
}

// Processes and threads that come and go: every one's end is counted, none twice.
TEST_F(cpu_meter_test, short_lived_processes_and_threads_are_counted_to_the_end) {
  auto s = make("churn");
  auto c = spawn_in(s.cg, [] {
    for (int i = 0; i < 20; ++i) {
      pid_t p = ::fork();
      if (p < 0) return 1;
      if (p == 0) {
        auto spin = [](int64_t ns) {
          timespec t{};
          ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
          int64_t end = t.tv_sec * 1'000'000'000LL + t.tv_nsec + ns;
          do ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
          while (t.tv_sec * 1'000'000'000LL + t.tv_nsec < end);
        };
        std::thread a(spin, 4 * ms), b(spin, 4 * ms);
        spin(2 * ms);
        a.join();
        b.join();
        ::_exit(0);
      }
      if (i % 2 == 1) {
        while (::waitpid(-1, nullptr, 0) > 0) {
        }
      }
    }
    while (::waitpid(-1, nullptr, 0) > 0) {
    }
    return 0;
  });
  auto base = settled(s);
  c.release();
  ASSERT_TRUE(exited_ok(c.wait_status()));
  auto d = settled(s) - base;
  std::printf("since release: meter %.3f ms, cgroup %.3f ms\n", d.meter / 1e6, d.kernel / 1e6);
  EXPECT_GE(d.meter, 200 * ms);
  EXPECT_NEAR(d.meter, d.kernel, d.kernel * 0.001);
}

TEST_F(cpu_meter_test, two_sandboxes_at_once_see_only_their_own) {
  auto a = make("a"), b = make("b");
  report ra, rb;
  auto body = [](report& r, int64_t ns) {
    bool sent = r.send(burn_until(ns));
    stop_self();
    return sent ? 0 : 1;
  };
  auto ca = spawn_in(a.cg, [&] { return body(ra, 250 * ms); });
  auto cb = spawn_in(b.cg, [&] { return body(rb, 120 * ms); });
  auto base_a = settled(a), base_b = settled(b);
  ca.release();
  cb.release();
  ASSERT_TRUE(ca.wait_stopped());
  ASSERT_TRUE(cb.wait_stopped());
  int64_t own_a = ra.receive(), own_b = rb.receive();
  int64_t at_stop_a = settled(a).meter, at_stop_b = settled(b).meter;
  ca.resume();
  cb.resume();
  ASSERT_TRUE(exited_ok(ca.wait_status()));
  ASSERT_TRUE(exited_ok(cb.wait_status()));
  auto da = settled(a) - base_a, db = settled(b) - base_b;
  std::printf("a: clock %.3f ms, meter %.3f ms; b: clock %.3f ms, meter %.3f ms\n", own_a / 1e6, at_stop_a / 1e6,
              own_b / 1e6, at_stop_b / 1e6);
  std::printf("after exit, since release: a: meter %.3f ms, cgroup %.3f ms; b: meter %.3f ms, cgroup %.3f ms\n",
              da.meter / 1e6, da.kernel / 1e6, db.meter / 1e6, db.kernel / 1e6);
  EXPECT_NEAR(at_stop_a, own_a, own_a * 0.01);
  EXPECT_NEAR(at_stop_b, own_b, own_b * 0.01);
  EXPECT_NEAR(da.meter, da.kernel, da.kernel * 0.001);
  EXPECT_NEAR(db.meter, db.kernel, db.kernel * 0.001);
}

TEST_F(cpu_meter_test, unwatched_cgroups_are_not_counted) {
  auto idle = make("idle");
  auto other = make("other", false);
  auto c = spawn_in(other.cg, [] { return burn_until(50 * ms) > 0 ? 0 : 1; });
  c.release();
  ASSERT_TRUE(exited_ok(c.wait_status()));
  EXPECT_GE(kernel_cpu_ns(other.cg), 40 * ms);
  EXPECT_EQ(meter_->cpu_ns(idle.id), 0);
  EXPECT_EQ(meter_->cpu_ns(other.id).error(), std::errc::no_such_file_or_directory);
  ASSERT_TRUE(meter_->watch(other.id));
  EXPECT_EQ(meter_->cpu_ns(other.id), 0);
}

// This machine's hypervisor reports no steal time, so a vCPU stall the host makes between the
// kill and its delivery is charged to the spinner, by the kernel as by the meter (CI once saw
// the kill land 10 ms after its event). Every attempt must be killed with one event inside
// the bound; the CPU used must be inside it in one of three attempts.
TEST_F(cpu_meter_test, a_100ms_budget_kills_a_spinner_by_110ms) {
  bool within = false;
  for (int attempt = 0; attempt < 3 && !within; ++attempt) {
    auto s = make("spin" + std::to_string(attempt));
    ASSERT_TRUE(meter_->arm(s.id, 100 * ms));
    auto c = spawn_in(s.cg, [] {
      for (;;) {
      }
      return 0;
    });
    c.release();
    ASSERT_TRUE(killed(c.wait_status()));
    auto f = settled(s);
    auto events = kills(1s);
    ASSERT_EQ(events.size(), 1u);
    std::printf("killed at %.3f ms (event: %.3f ms); cgroup %.3f ms\n", f.meter / 1e6, events[0].used_ns / 1e6,
                f.kernel / 1e6);
    EXPECT_EQ(events[0].cgroup_id, s.id);
    EXPECT_GE(events[0].used_ns, 100 * ms);
    EXPECT_LE(events[0].used_ns, 110 * ms);
    within = f.meter <= 110 * ms && f.kernel <= 110 * ms;
  }
  EXPECT_TRUE(within) << "three attempts used more than 110 ms of CPU";
}

// Every spinning process of the sandbox dies without the node's help; one event.
TEST_F(cpu_meter_test, a_budget_kills_every_spinning_process_with_one_event) {
  auto s = make("spin2");
  ASSERT_TRUE(meter_->arm(s.id, 100 * ms));
  auto c = spawn_in(s.cg, [] {
    ::fork();
    for (;;) {
    }
    return 0;
  });
  c.release();
  ASSERT_TRUE(killed(c.wait_status()));
  auto deadline = std::chrono::steady_clock::now() + 2s;
  while (s.cg.processes() > 0 && std::chrono::steady_clock::now() < deadline) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(s.cg.processes(), 0u);
  auto f = settled(s);
  auto events = kills(1s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].cgroup_id, s.id);
  std::printf("two spinners killed at %.3f ms (event: %.3f ms)\n", f.meter / 1e6, events[0].used_ns / 1e6);
  EXPECT_LE(f.meter, 130 * ms);
}

TEST_F(cpu_meter_test, a_child_under_its_budget_lives_and_a_new_arming_counts_from_then) {
  auto s = make("under");
  ASSERT_TRUE(meter_->arm(s.id, 200 * ms));
  auto c = spawn_in(s.cg, [] { return burn_until(100 * ms) > 0 ? 0 : 1; });
  c.release();
  ASSERT_TRUE(exited_ok(c.wait_status()));
  settled(s);
  EXPECT_TRUE(kills(100ms).empty());

  // 100 ms used; a new 150 ms budget kills the next child at 250 ms in all.
  ASSERT_TRUE(meter_->arm(s.id, 150 * ms));
  auto spinner = spawn_in(s.cg, [] {
    for (;;) {
    }
    return 0;
  });
  spinner.release();
  ASSERT_TRUE(killed(spinner.wait_status()));
  auto events = kills(1s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_GE(events[0].used_ns, 150 * ms);
  EXPECT_LE(events[0].used_ns, 160 * ms);
  EXPECT_GE(*meter_->cpu_ns(s.id), 250 * ms);
}

}  // namespace
}  // namespace fnmesh::node
