#pragma once
// cgroup_child: a process born in a sandbox's cgroup, for the tests and benchmarks of what
// the kernel counts per cgroup. clone3 CLONE_INTO_CGROUP puts it in the v2 directory from
// its first instruction (the BPF meters count a task from its birth); it is then attached
// to the v1 directories and waits, blocked, until release(), so that everything it runs is
// counted there too. After the raw clone3 the child may make only plain system calls and
// fork: glibc's cached pid and tid are still the parent's. Header-only: its users link
// fnmesh::sandbox.
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "node/sandbox/cgroups.h"

namespace fnmesh::test {

struct cgroup_child {
  pid_t pid = -1;  // -1: it could not be started or attached
  int go = -1;

  // Lets it run its body.
  bool release() {
    const bool ok = ::write(go, "x", 1) == 1;
    ::close(go);
    go = -1;
    return ok;
  }
  // Its wait status once it ends (-1 if it cannot be waited for).
  int wait_status() const {
    int status = 0;
    return ::waitpid(pid, &status, 0) == pid ? status : -1;
  }
  // Its exit code, or 128 + the signal that ended it.
  int exit_code() const {
    const int status = wait_status();
    return status < 0 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Waits until it stops itself (kill(getpid(), SIGSTOP): raise() would use the cached tid).
  bool wait_stopped() const {
    int status = 0;
    return ::waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status);
  }
  bool resume() const { return ::kill(pid, SIGCONT) == 0; }
};

// Starts `body` in a child of `cg`, held until release(); the child exits with what body
// returns (100 if it is never released).
inline cgroup_child spawn_in(node::sandbox_cgroup& cg, const std::function<int()>& body) {
  int go[2];
  if (::pipe2(go, O_CLOEXEC) != 0) return {};
  clone_args a{};
  a.exit_signal = SIGCHLD;
  if (cg.v2_fd() >= 0) {
    a.flags = CLONE_INTO_CGROUP;
    a.cgroup = static_cast<uint64_t>(cg.v2_fd());
  }
  const pid_t pid = static_cast<pid_t>(::syscall(SYS_clone3, &a, sizeof a));
  if (pid == 0) {
    ::close(go[1]);
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(100);
    ::_exit(body());
  }
  ::close(go[0]);
  cgroup_child child{.pid = pid, .go = go[1]};
  if (pid < 0 || !cg.attach(pid)) {
    child.release();
    if (pid > 0) child.wait_status();
    return {};
  }
  // Until it blocks on the gate, it may still be running in the parent's v1 cgroups.
  const std::string stat = "/proc/" + std::to_string(pid) + "/stat";
  for (int i = 0; i < 1000; ++i) {
    std::ifstream f(stat);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (text.find(") S ") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return child;
}

}  // namespace fnmesh::test
