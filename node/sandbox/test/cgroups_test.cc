// cgroups: layout detection from canned /proc text; then, as root, real trees and sandbox
// cgroups under /sys/fs/cgroup with real processes (OOM kill, fork bomb, CPU quota).
#include "node/sandbox/cgroups.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/cgroup_child.h"
#include "tests/support/privileged.h"

namespace fnmesh::node {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
constexpr int64_t mib = 1 << 20;

TEST(cgroup_layout, hybrid) {
  const char* mountinfo =
      "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
      "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
      "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
      "33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
      "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
      "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
      "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
      "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
  const char* self = "9:name=systemd:/\n8:pids:/\n4:memory:/api/f07\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
  auto l = parse_cgroup_layout(mountinfo, self);
  EXPECT_EQ(l.v2_dir, "/sys/fs/cgroup/unified");
  ASSERT_EQ(l.v1.size(), 4u);
  EXPECT_EQ(l.v1[0].dir, "/sys/fs/cgroup/cpu");
  EXPECT_TRUE(l.v1[0].cpu && !l.v1[0].cpuacct && !l.v1[0].memory);
  EXPECT_EQ(l.v1[1].dir, "/sys/fs/cgroup/cpuacct");
  EXPECT_TRUE(l.v1[1].cpuacct && !l.v1[1].cpu);
  EXPECT_EQ(l.v1[2].dir, "/sys/fs/cgroup/memory/api/f07");
  EXPECT_TRUE(l.v1[2].memory);
  EXPECT_EQ(l.v1[3].dir, "/sys/fs/cgroup/pids");
  EXPECT_TRUE(l.v1[3].pids);
}

TEST(cgroup_layout, pure_v2) {
  auto l = parse_cgroup_layout(
      "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
      "rw,nsdelegate,memory_recursiveprot\n",
      "0::/system.slice/fnmesh.service\n");
  EXPECT_EQ(l.v2_dir, "/sys/fs/cgroup/system.slice/fnmesh.service");
  EXPECT_TRUE(l.v1.empty());
}

// Co-mounted controllers, a mount of a subtree (containers), an escaped mount point, and a
// hierarchy whose mount does not reach our cgroup.
TEST(cgroup_layout, comounted_subtree_mounts) {
  auto l = parse_cgroup_layout(
      "41 30 0:40 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
      "42 30 0:41 /docker/abc /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n"
      "43 30 0:42 /other /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
      "44 30 0:43 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
      "5:pids:/docker/abc\n4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc/sub\n0::/docker/abc\n");
  EXPECT_EQ(l.v2_dir, "/sys/fs/cgroup/unified");
  ASSERT_EQ(l.v1.size(), 2u);
  EXPECT_EQ(l.v1[0].dir, "/sys/fs/cgroup/cpu,cpuacct/sub");
  EXPECT_TRUE(l.v1[0].cpu && l.v1[0].cpuacct);
  EXPECT_EQ(l.v1[1].dir, "/sys/fs/cgroup/my memory");
  EXPECT_TRUE(l.v1[1].memory);
}

using test::require_privileged;

std::string text_of(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto s = ss.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

std::string unique_node_id() {
  static int n = 0;
  return "cgtest-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

std::vector<std::string> dirs_of(const sandbox_cgroup& s) {
  auto out = s.v1_dirs();
  if (!s.v2_dir().empty()) out.insert(out.begin(), s.v2_dir());
  return out;
}

// The v1 directory of `s` that has `file`.
std::string v1_dir_with(const sandbox_cgroup& s, const char* file) {
  for (const auto& d : s.v1_dirs())
    if (fs::exists(d + "/" + file)) return d;
  return "";
}

bool in_procs(const std::string& dir, pid_t pid) {
  std::istringstream in(text_of(dir + "/cgroup.procs"));
  for (pid_t p; in >> p;)
    if (p == pid) return true;
  return false;
}

using test::spawn_in;

int touch_memory(size_t bytes) {
  auto* p = static_cast<volatile char*>(
      ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) return 2;
  for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
  ::munmap(const_cast<char*>(p), bytes);
  return 0;
}

class cgroups_test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "cgroups_test needs root (FNMESH_REQUIRE_PRIVILEGED=1)";
      GTEST_SKIP() << "cgroups_test needs root";
    }
    // Orphaned grandchildren come to us, to be reaped in TearDown.
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    auto t = cgroup_tree::open(unique_node_id());
    ASSERT_TRUE(t) << t.error().message();
    tree_ = std::move(*t);
    std::printf("%s\n", tree_->describe().c_str());
    for (auto c : {cgroup_controller::memory, cgroup_controller::cpu, cgroup_controller::pids}) {
      if (tree_->version_of(c) != cgroup_version::none) continue;
      if (require_privileged()) GTEST_FAIL() << "a limit is unavailable: " << tree_->describe();
      GTEST_SKIP() << "a limit is unavailable: " << tree_->describe();
    }
  }

  void TearDown() override {
    tree_.reset();
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  sandbox_cgroup create(const char* name, cgroup_limits limits) {
    auto s = tree_->create(name, limits);
    EXPECT_TRUE(s) << s.error().message();
    return s ? std::move(*s) : sandbox_cgroup();
  }

  std::unique_ptr<cgroup_tree> tree_;
};

TEST_F(cgroups_test, limits_files_hold_the_values) {
  auto s = create("limits", {.memory_bytes = 64 * mib, .cpus = 0.5, .pids_max = 16});
  ASSERT_GE(s.v2_fd(), 0);
  EXPECT_EQ(fs::path(s.v2_dir()).parent_path(), tree_->dirs().front());
  for (const auto& d : dirs_of(s)) EXPECT_TRUE(fs::is_directory(d)) << d;

  if (tree_->version_of(cgroup_controller::memory) == cgroup_version::v1) {
    auto d = v1_dir_with(s, "memory.limit_in_bytes");
    EXPECT_EQ(text_of(d + "/memory.limit_in_bytes"), "67108864");
    if (fs::exists(d + "/memory.memsw.limit_in_bytes")) {
      EXPECT_EQ(text_of(d + "/memory.memsw.limit_in_bytes"), "67108864");
    }
    EXPECT_EQ(text_of(d + "/memory.swappiness"), "0");
  } else {
    EXPECT_EQ(text_of(s.v2_dir() + "/memory.max"), "67108864");
    if (fs::exists(s.v2_dir() + "/memory.swap.max")) {
      EXPECT_EQ(text_of(s.v2_dir() + "/memory.swap.max"), "0");
    }
  }
  if (tree_->version_of(cgroup_controller::cpu) == cgroup_version::v1) {
    auto d = v1_dir_with(s, "cpu.cfs_quota_us");
    EXPECT_EQ(text_of(d + "/cpu.cfs_period_us"), "100000");
    EXPECT_EQ(text_of(d + "/cpu.cfs_quota_us"), "50000");
  } else {
    EXPECT_EQ(text_of(s.v2_dir() + "/cpu.max"), "50000 100000");
  }
  auto pids_dir = tree_->version_of(cgroup_controller::pids) == cgroup_version::v1 ? v1_dir_with(s, "pids.max")
                                                                                    : s.v2_dir();
  EXPECT_EQ(text_of(pids_dir + "/pids.max"), "16");

  // The smallest quota is 1 ms per period.
  auto tiny = create("tiny", {.cpus = 0.001});
  if (tree_->version_of(cgroup_controller::cpu) == cgroup_version::v1)
    EXPECT_EQ(text_of(v1_dir_with(tiny, "cpu.cfs_quota_us") + "/cpu.cfs_quota_us"), "1000");
  else
    EXPECT_EQ(text_of(tiny.v2_dir() + "/cpu.max"), "1000 100000");
}

TEST_F(cgroups_test, over_the_memory_limit_is_oom_killed) {
  auto s = create("oom", {.memory_bytes = 64 * mib, .cpus = 1, .pids_max = 16});
  EXPECT_FALSE(s.oom_killed());
  auto c = spawn_in(s, [] { return touch_memory(200 * mib); });
  for (const auto& d : dirs_of(s)) EXPECT_TRUE(in_procs(d, c.pid)) << d;
  EXPECT_EQ(s.processes(), 1u);
  c.release();
  int status = c.wait_status();
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_TRUE(s.oom_killed());
  EXPECT_GT(s.peak_memory_bytes(), 32 * mib);
  EXPECT_LE(s.peak_memory_bytes(), 64 * mib);
  EXPECT_EQ(s.processes(), 0u);
  EXPECT_TRUE(s.remove());
}

TEST_F(cgroups_test, usage_peak_and_cpu_quota) {
  auto s = create("usage", {.memory_bytes = 128 * mib, .cpus = 0.1, .pids_max = 16});
  auto c = spawn_in(s, [] {
    if (touch_memory(32 * mib) != 0) return 2;
    timespec t{};
    do ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    while (t.tv_sec == 0 && t.tv_nsec < 50'000'000);
    return 0;
  });
  auto start = std::chrono::steady_clock::now();
  c.release();
  int status = c.wait_status();
  auto wall = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;

  EXPECT_FALSE(s.oom_killed());
  EXPECT_GE(s.cpu().user_ns + s.cpu().system_ns, 50'000'000);
  EXPECT_GE(s.peak_memory_bytes(), 32 * mib);
  // 50 ms of CPU at a tenth of a CPU takes at least 4 periods of 100 ms, throttled.
  EXPECT_GE(wall, 350ms);
  auto cpu_stat = tree_->version_of(cgroup_controller::cpu) == cgroup_version::v1
                      ? v1_dir_with(s, "cpu.cfs_quota_us") + "/cpu.stat"
                      : s.v2_dir() + "/cpu.stat";
  auto stat = text_of(cpu_stat);
  auto at = stat.find("nr_throttled ");
  ASSERT_NE(at, std::string::npos) << stat;
  EXPECT_GT(std::stol(stat.substr(at + 13)), 0) << stat;
  std::printf("cpu %.1f ms in %.1f ms wall; peak %.1f MiB\n", (s.cpu().user_ns + s.cpu().system_ns) / 1e6,
              std::chrono::duration<double, std::milli>(wall).count(), double(s.peak_memory_bytes()) / mib);

  s.reset_peak();
  EXPECT_LT(s.peak_memory_bytes(), 16 * mib);
}

TEST_F(cgroups_test, fork_bomb_stops_at_pids_max_and_kill_empties) {
  auto s = create("bomb", {.memory_bytes = 64 * mib, .cpus = 1, .pids_max = 16});
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  auto c = spawn_in(s, [&] {
    int forked = 0, first_errno = 0;
    for (int i = 0; i < 64; ++i) {
      pid_t p = ::fork();
      if (p == 0) {
        ::pause();
        ::_exit(0);
      }
      if (p > 0) ++forked;
      else if (!first_errno) first_errno = errno;
    }
    int r[2] = {forked, first_errno};
    if (::write(report[1], r, sizeof r) != sizeof r) return 3;
    ::pause();
    return 0;
  });
  ::close(report[1]);
  c.release();
  int r[2] = {0, 0};
  ASSERT_EQ(::read(report[0], r, sizeof r), static_cast<ssize_t>(sizeof r));
  ::close(report[0]);
  EXPECT_EQ(r[0], 15);  // 16 with the child itself
  EXPECT_EQ(r[1], EAGAIN);
  EXPECT_EQ(s.processes(), 16u);

  s.kill();
  int status = c.wait_status();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (s.processes() > 0 && std::chrono::steady_clock::now() < deadline) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(s.processes(), 0u);
  auto dirs = dirs_of(s);
  auto removed = s.remove();
  ASSERT_TRUE(removed) << removed.error().message();
  for (const auto& d : dirs) EXPECT_FALSE(fs::exists(d)) << d;
  EXPECT_TRUE(s.remove());  // already gone is fine
}

// A node that died with a sandbox running leaves its directories; the next open() with the
// same node id kills what runs there and removes them.
TEST_F(cgroups_test, open_cleans_a_previous_runs_leftovers) {
  const auto id = unique_node_id();
  int report[2], alive[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe(alive), 0);  // the write end lives in the leftover sandbox's process
  pid_t crashed = ::fork();
  if (crashed == 0) {
    ::close(report[0]);
    ::close(alive[0]);
    auto t = cgroup_tree::open(id);
    if (!t) ::_exit(1);
    auto s = (*t)->create("left", {.memory_bytes = 64 * mib, .cpus = 1, .pids_max = 16});
    if (!s) ::_exit(2);
    auto c = spawn_in(*s, [] {
      ::pause();
      return 0;
    });
    c.release();
    std::string dirs;
    for (const auto& d : dirs_of(*s)) dirs += d + "\n";
    if (::write(report[1], dirs.data(), dirs.size()) != static_cast<ssize_t>(dirs.size())) ::_exit(3);
    ::_exit(0);  // no destructors: as if the node crashed
  }
  ::close(report[1]);
  ::close(alive[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(crashed, &status, 0), crashed);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  char buf[4096];
  ssize_t n = ::read(report[0], buf, sizeof buf);
  ::close(report[0]);
  ASSERT_GT(n, 0);
  std::vector<std::string> dirs;
  std::istringstream in(std::string(buf, n));
  for (std::string d; std::getline(in, d);) dirs.push_back(d);
  ASSERT_FALSE(dirs.empty());
  for (const auto& d : dirs) EXPECT_TRUE(fs::is_directory(d)) << d;

  auto t = cgroup_tree::open(id);
  ASSERT_TRUE(t) << t.error().message();
  for (const auto& d : dirs) EXPECT_FALSE(fs::exists(d)) << d;
  pollfd p{alive[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  EXPECT_EQ(::read(alive[0], buf, 1), 0);  // its process is gone
  ::close(alive[0]);
  for (const auto& d : (*t)->dirs()) EXPECT_TRUE(fs::is_directory(d)) << d;
}

TEST_F(cgroups_test, tree_removes_its_directories_and_kills_what_is_left) {
  auto t = cgroup_tree::open(unique_node_id());
  ASSERT_TRUE(t) << t.error().message();
  auto tree_dirs = (*t)->dirs();
  ASSERT_FALSE(tree_dirs.empty());
  for (const auto& d : tree_dirs) EXPECT_TRUE(fs::is_directory(d)) << d;

  auto s = (*t)->create("running", {.memory_bytes = 64 * mib, .cpus = 1, .pids_max = 16});
  ASSERT_TRUE(s) << s.error().message();
  auto c = spawn_in(*s, [] {
    ::pause();
    return 0;
  });
  c.release();
  t->reset();
  int status = c.wait_status();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  for (const auto& d : tree_dirs) EXPECT_FALSE(fs::exists(d)) << d;
}

// Not a pass/fail figure: what a cold start pays for its cgroups.
TEST_F(cgroups_test, create_remove_cost) {
  constexpr int rounds = 200;
  std::vector<double> create_us, remove_us;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto s = tree_->create("bench", {.memory_bytes = 128 * mib, .cpus = 0.1, .pids_max = 256});
    auto t1 = std::chrono::steady_clock::now();
    ASSERT_TRUE(s) << s.error().message();
    ASSERT_TRUE(s->remove());
    auto t2 = std::chrono::steady_clock::now();
    create_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    remove_us.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
  }
  auto pct = [](std::vector<double> v, double q) {
    std::ranges::sort(v);
    return v[static_cast<size_t>(q * (v.size() - 1))];
  };
  std::vector<double> total(rounds);
  for (int i = 0; i < rounds; ++i) total[i] = create_us[i] + remove_us[i];
  std::printf("cgroup create+remove over %d: p50 %.0f us (create %.0f, remove %.0f), p99 %.0f us\n", rounds,
              pct(total, 0.5), pct(create_us, 0.5), pct(remove_us, 0.5), pct(total, 0.99));
}

}  // namespace
}  // namespace fnmesh::node
