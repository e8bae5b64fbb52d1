// seccomp_filter: every probe runs in a forked child, so the test process stays unfiltered; the
// child reports what it saw through its exit code.
#include "node/sandbox/seccomp.h"

#include <asm/unistd.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <new>
#include <system_error>
#include <vector>

namespace fnmesh::node {
namespace {

using clock_type = std::chrono::steady_clock;

constexpr int install_failed = 250;

int64_t ns_since(clock_type::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - start).count();
}

const seccomp_filter& filter() {
  static const seccomp_filter built = [] {
    auto start = clock_type::now();
    auto f = seccomp_filter::build();
    int64_t took = ns_since(start);
    if (!f) throw std::system_error(f.error(), "seccomp_filter::build");
    std::printf("build(): %.1f us, %u BPF instructions\n", took / 1e3, unsigned(f->program()->len));
    return std::move(f.value());
  }();
  return built;
}

// The errno a call left, or 0 when it succeeded.
int error_of(long rc) { return rc == -1 ? errno : 0; }

// Runs probe in a forked child, under the filter or not: the child's exit code (the probe's
// result), or 128 + the signal that killed it.
int run_in_child(bool filtered, const std::function<int()>& probe) {
  const seccomp_filter& f = filter();
  pid_t pid = ::fork();
  if (pid == 0) {
    if (filtered && f.install() != 0) ::_exit(install_failed);
    ::_exit(probe());
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int filtered(const std::function<int()>& probe) { return run_in_child(true, probe); }
int unfiltered(const std::function<int()>& probe) { return run_in_child(false, probe); }

struct probe {
  const char* what;
  std::function<int()> call;
};

// Without the filter none of these gives EPERM to root: the EPERM is the filter's.
void expect_refused(const std::vector<probe>& probes, int expected) {
  for (const auto& p : probes) {
    EXPECT_EQ(filtered(p.call), expected) << p.what;
    if (::geteuid() == 0) {
      EXPECT_NE(unfiltered(p.call), expected) << p.what << " without the filter";
    }
  }
}

TEST(seccomp_filter, refuses_calls_that_reach_past_the_sandbox_with_eperm) {
  expect_refused(
      {
          {"mount", [] { return error_of(::mount("none", "/nonexistent-fnmesh", "tmpfs", 0, nullptr)); }},
          {"ptrace(PTRACE_TRACEME)", [] { return error_of(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr)); }},
          {"bpf", [] { return error_of(::syscall(SYS_bpf, BPF_MAP_CREATE, nullptr, 0)); }},
          {"unshare(CLONE_NEWNS)", [] { return error_of(::unshare(CLONE_NEWNS)); }},
          {"keyctl", [] {
             return error_of(::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
           }},
          {"personality(ADDR_NO_RANDOMIZE)", [] { return error_of(::personality(ADDR_NO_RANDOMIZE)); }},
          {"ioctl(TIOCSTI)", [] {
             char c = 'x';
             return error_of(::ioctl(::open("/dev/null", O_RDWR), TIOCSTI, &c));
           }},
          {"ioctl(TIOCSTI) with high bits set", [] {
             char c = 'x';
             return error_of(::syscall(SYS_ioctl, ::open("/dev/null", O_RDWR), (1UL << 32) | TIOCSTI, &c));
           }},
      },
      EPERM);
}

TEST(seccomp_filter, refuses_clone_into_any_new_namespace) {
  std::vector<probe> probes;
  for (auto [name, flag] : {std::pair{"CLONE_NEWNS", CLONE_NEWNS}, {"CLONE_NEWCGROUP", CLONE_NEWCGROUP},
                            {"CLONE_NEWUTS", CLONE_NEWUTS}, {"CLONE_NEWIPC", CLONE_NEWIPC},
                            {"CLONE_NEWUSER", CLONE_NEWUSER}, {"CLONE_NEWPID", CLONE_NEWPID},
                            {"CLONE_NEWNET", CLONE_NEWNET}}) {
    probes.push_back({name, [flag] {
                        long pid = ::syscall(SYS_clone, flag | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
                        if (pid == 0) ::_exit(0);
                        if (pid > 0) ::waitpid(pid_t(pid), nullptr, 0);
                        return error_of(pid);
                      }});
  }
  expect_refused(probes, EPERM);
}

TEST(seccomp_filter, clone3_fails_with_enosys_so_glibc_falls_back_to_clone) {
  // Unfiltered, these arguments give EINVAL.
  expect_refused({{"clone3", [] { return error_of(::syscall(SYS_clone3, nullptr, 0)); }}}, ENOSYS);
}

TEST(seccomp_filter, allows_the_default_persona_and_other_ioctls) {
  EXPECT_EQ(filtered([] { return error_of(::personality(PER_LINUX)); }), 0);
  EXPECT_EQ(filtered([] {
              int fds[2];
              if (::pipe(fds) != 0 || ::write(fds[1], "abc", 3) != 3) return 1;
              int queued = 0;
              if (::ioctl(fds[0], FIONREAD, &queued) != 0) return errno;
              return queued == 3 ? 0 : 2;
            }),
            0);
}

TEST(seccomp_filter, allows_fork_threads_files_and_exec) {
  EXPECT_EQ(filtered([] {
              pid_t pid = ::fork();
              if (pid == 0) ::_exit(7);
              int status = 0;
              if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return errno;
              return WIFEXITED(status) && WEXITSTATUS(status) == 7 ? 0 : 100;
            }),
            0)
      << "fork";

  EXPECT_EQ(filtered([] {
              static int ran = 0;
              pthread_t t;
              int rc = ::pthread_create(&t, nullptr, [](void*) -> void* { ran = 1; return nullptr; }, nullptr);
              if (rc != 0) return rc;
              ::pthread_join(t, nullptr);
              return ran == 1 ? 0 : 100;
            }),
            0)
      << "pthread_create";

  EXPECT_EQ(filtered([] {
              int fd = ::open("/tmp", O_TMPFILE | O_RDWR, 0600);
              if (fd < 0) return errno;
              char text[] = "written under the filter";
              if (::write(fd, text, sizeof text) != ssize_t(sizeof text)) return 100;
              char back[sizeof text] = {};
              if (::pread(fd, back, sizeof back, 0) != ssize_t(sizeof back) || std::memcmp(text, back, sizeof text))
                return 101;
              void* map = ::mmap(nullptr, sizeof text, PROT_READ, MAP_SHARED, fd, 0);
              if (map == MAP_FAILED) return errno;
              return std::memcmp(map, text, sizeof text) == 0 ? 0 : 102;
            }),
            0)
      << "open/write/read/mmap";

  EXPECT_EQ(filtered([] {
              char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
              ::execv(argv[0], argv);
              return errno;
            }),
            0)
      << "execve /bin/true";

  // posix_spawn tries clone3 first (CLONE_VM | CLONE_VFORK) and must fall back to clone.
  EXPECT_EQ(filtered([] {
              char* argv[] = {const_cast<char*>("/bin/sh"), const_cast<char*>("-c"), const_cast<char*>("exit 42"),
                              nullptr};
              pid_t pid = 0;
              if (int rc = ::posix_spawn(&pid, argv[0], nullptr, nullptr, argv, environ); rc != 0) return rc;
              int status = 0;
              ::waitpid(pid, &status, 0);
              return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
            }),
            42)
      << "posix_spawn /bin/sh -c 'exit 42'";
}

#if defined(__x86_64__)
TEST(seccomp_filter, kills_a_process_that_uses_the_x32_abi) {
  EXPECT_EQ(filtered([] {
              rlimit no_core{0, 0};
              ::setrlimit(RLIMIT_CORE, &no_core);
              return error_of(::syscall(__X32_SYSCALL_BIT | SYS_getpid));
            }),
            128 + SIGSYS);
}
#endif

// What a child measured, in memory it shares with the test process whatever the clone flags.
struct figures {
  int rc = -1;
  int64_t install_ns = 0;
  int64_t call_ns[2] = {};  // an allowed call that the filter examines: before, after install()
};

figures* shared_figures() {
  void* p = ::mmap(nullptr, sizeof(figures), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : new (p) figures;
}

int64_t ioctl_ns() {
  constexpr int calls = 100'000;
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  int queued = 0;
  auto start = clock_type::now();
  for (int i = 0; i < calls; ++i) ::ioctl(fds[0], FIONREAD, &queued);
  int64_t ns = ns_since(start) / calls;
  ::close(fds[0]);
  ::close(fds[1]);
  return ns;
}

int timed_install(void* out) {
  auto* m = static_cast<figures*>(out);
  auto start = clock_type::now();
  m->rc = filter().install();
  m->install_ns = ns_since(start);
  return 0;
}

// Median install() time in 100 fresh children made by clone() with these flags.
int64_t median_install_ns(int clone_flags) {
  constexpr int children = 100;
  figures* m = shared_figures();
  std::vector<char> stack(64 * 1024);
  std::vector<int64_t> ns;
  for (int i = 0; i < children && m; ++i) {
    m->rc = -1;
    pid_t pid = ::clone(timed_install, stack.data() + stack.size(), clone_flags | SIGCHLD, m);
    EXPECT_EQ(::waitpid(pid, nullptr, 0), pid);
    EXPECT_EQ(m->rc, 0);
    ns.push_back(m->install_ns);
  }
  ::munmap(m, sizeof(figures));
  std::sort(ns.begin(), ns.end());
  return ns.size() == children ? ns[children / 2] : -1;
}

// Figures, printed: install() in a fresh process (median of 100), in a forked child (which pays
// this VM's dear copy-on-write faults) and in a CLONE_VM | CLONE_VFORK child (as a sandbox is
// started); and what the filter adds to an allowed call it examines (ioctl; calls it never
// refuses skip it through the kernel's seccomp cache).
TEST(seccomp_filter, install_cost) {
  filter();
  std::printf("install(): median %.1f us in a forked child, %.1f us in a CLONE_VM child\n",
              median_install_ns(0) / 1e3, median_install_ns(CLONE_VM | CLONE_VFORK) / 1e3);

  figures* m = shared_figures();
  ASSERT_NE(m, nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    m->call_ns[0] = ioctl_ns();
    m->rc = filter().install();
    m->call_ns[1] = ioctl_ns();
    ::_exit(0);
  }
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  EXPECT_EQ(m->rc, 0);
  std::printf("ioctl(FIONREAD): %lld ns unfiltered, %lld ns filtered\n", static_cast<long long>(m->call_ns[0]),
              static_cast<long long>(m->call_ns[1]));
  ::munmap(m, sizeof(figures));
}

}  // namespace
}  // namespace fnmesh::node
