#include "tests/support/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <system_error>
#include <thread>

extern char** environ;

namespace fnmesh::test {
namespace {

int code_of(int status) noexcept {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::filesystem::path find_program(std::string_view name) {
  std::vector<std::filesystem::path> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::string_view p(path);
    size_t pos = 0;
    while (pos <= p.size()) {
      size_t colon = p.find(':', pos);
      dirs.emplace_back(p.substr(pos, colon == p.npos ? p.npos : colon - pos));
      if (colon == p.npos) break;
      pos = colon + 1;
    }
  }
  dirs.emplace_back("/usr/sbin");
  dirs.emplace_back("/usr/local/bin");
  dirs.emplace_back("/usr/bin");
  for (const auto& d : dirs) {
    if (d.empty()) continue;
    auto candidate = d / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

child_process child_process::spawn(const spawn_options& opts) {
  std::vector<std::string> argv_s{opts.program.string()};
  argv_s.insert(argv_s.end(), opts.args.begin(), opts.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::map<std::string, std::string> env_map;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq != kv.npos) env_map[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const auto& [k, v] : opts.env) env_map[k] = v;
  std::vector<std::string> env_s;
  for (const auto& [k, v] : env_map) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  int log_fd = -1;
  if (!opts.log.empty()) {
    log_fd = ::open(opts.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::system_error(errno, std::system_category(), "open " + opts.log.string());
  }
  // The child reports an exec failure through this pipe; success closes it (CLOEXEC).
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    if (log_fd >= 0) ::close(log_fd);
    throw std::system_error(errno, std::system_category(), "pipe2");
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    if (log_fd >= 0) ::close(log_fd);
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    throw std::system_error(e, std::system_category(), "fork");
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) != 0) {
      int e = errno;
      (void)!::write(err_pipe[1], &e, sizeof e);
      ::_exit(127);
    }
    ::execve(argv[0], argv.data(), envp.data());
    int e = errno;
    (void)!::write(err_pipe[1], &e, sizeof e);
    ::_exit(127);
  }
  if (log_fd >= 0) ::close(log_fd);
  ::close(err_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do n = ::read(err_pipe[0], &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == sizeof child_errno) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    throw std::system_error(child_errno, std::system_category(), "exec " + opts.program.string());
  }
  return child_process(pid, opts.log);
}

child_process::~child_process() {
  if (pid_ > 0 && !exit_code_) {
    ::kill(-pid_, SIGKILL);  // its own process group: what it started goes too
    ::kill(pid_, SIGKILL);
    reap_now();
  }
}

child_process::child_process(child_process&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), log_(std::move(o.log_)), exit_code_(o.exit_code_) {}

child_process& child_process::operator=(child_process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0 && !exit_code_) {
      ::kill(pid_, SIGKILL);
      reap_now();
    }
    pid_ = std::exchange(o.pid_, -1);
    log_ = std::move(o.log_);
    exit_code_ = o.exit_code_;
  }
  return *this;
}

void child_process::reap_now() noexcept {
  int status = 0;
  pid_t r;
  do r = ::waitpid(pid_, &status, 0);
  while (r < 0 && errno == EINTR);
  exit_code_ = r == pid_ ? code_of(status) : -1;
}

bool child_process::running() {
  if (pid_ <= 0 || exit_code_) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_code_ = code_of(status);
    return false;
  }
  return r == 0;
}

bool child_process::signal(int sig) noexcept {
  return pid_ > 0 && !exit_code_ && ::kill(pid_, sig) == 0;
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (running()) {
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  return exit_code_;
}

int child_process::stop(std::chrono::milliseconds grace) {
  if (!running()) return exit_code_.value_or(-1);
  signal(SIGTERM);
  if (auto code = wait(grace)) return *code;
  signal(SIGKILL);
  reap_now();
  return exit_code_.value_or(-1);
}

std::string child_process::log_text() const {
  if (log_.empty()) return {};
  std::ifstream in(log_, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool child_process::wait_for_log(std::string_view needle, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (log_text().find(needle) != std::string::npos) return true;
    if (!running() || std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace fnmesh::test
