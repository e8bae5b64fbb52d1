#include "tools/mesh.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <fstream>
#include <thread>

#include "common/unique_fd.h"
#include "tools/cli.h"

namespace fnmesh::cli {
namespace {

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

}  // namespace

std::optional<std::filesystem::path> find_nats_server() {
  std::vector<std::filesystem::path> candidates;
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest(path);
    while (!rest.empty()) {
      const size_t colon = rest.find(':');
      candidates.emplace_back(std::filesystem::path(rest.substr(0, colon)) / "nats-server");
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    }
  }
  candidates.emplace_back("/usr/sbin/nats-server");
  candidates.emplace_back("/usr/bin/nats-server");
  for (const auto& c : candidates)
    if (c.is_absolute() && ::access(c.c_str(), X_OK) == 0) return c;
  return std::nullopt;
}

std::filesystem::path sibling_binary(std::string_view name) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (ec ? std::filesystem::current_path() : self.parent_path()) / name;
}

result<std::vector<int>> pick_free_ports(size_t n) {
  std::vector<unique_fd> held;
  std::vector<int> ports;
  for (size_t i = 0; i < n; ++i) {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_errno(errno);
    sockaddr_in a = loopback(0);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return fail_errno(errno);
    socklen_t len = sizeof a;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) return fail_errno(errno);
    ports.push_back(ntohs(a.sin_port));
    held.push_back(std::move(fd));
  }
  return ports;
}

bool port_free(int port) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(port);
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

bool port_answers(int port) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_in a = loopback(port);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

result<void> spawn(daemon_process& d, const std::filesystem::path& log) {
  // Everything the child needs is prepared before fork: only async-signal-safe calls after.
  unique_fd out(::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) return fail_errno(errno);
  unique_fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return fail_errno(errno);
  std::vector<std::string> argv_text{d.binary.string()};
  argv_text.insert(argv_text.end(), d.args.begin(), d.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) return fail_errno(errno);
  if (pid == 0) {
    ::setsid();
    ::dup2(null.get(), STDIN_FILENO);
    ::dup2(out.get(), STDOUT_FILENO);
    ::dup2(out.get(), STDERR_FILENO);
    ::close_range(3, ~0u, 0);  // no NATS socket or other descriptor leaks into the daemon
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    static const char msg[] = "fnmesh: exec failed\n";
    [[maybe_unused]] auto w = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  d.pid = pid;
  return {};
}

bool alive(pid_t pid, const std::filesystem::path& binary) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  const std::string proc = "/proc/" + std::to_string(pid);
  if (auto stat = read_file(proc + "/stat")) {
    const size_t paren = stat->rfind(')');
    if (paren != std::string::npos && paren + 2 < stat->size()) {
      const char state = (*stat)[paren + 2];
      if (state == 'Z' || state == 'X') return false;
    }
  }
  auto cmdline = read_file(proc + "/cmdline");
  if (!cmdline) return false;
  const std::string argv0 = cmdline->substr(0, cmdline->find('\0'));
  return argv0 == binary.string();
}

bool child_running(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  return r == 0;
}

bool stop(pid_t pid, const std::filesystem::path& binary, std::chrono::milliseconds grace) {
  using clock = std::chrono::steady_clock;
  if (!alive(pid, binary)) return false;
  ::kill(pid, SIGTERM);
  const auto deadline = clock::now() + grace;
  while (clock::now() < deadline) {
    int status = 0;
    ::waitpid(pid, &status, WNOHANG);  // reaps it when it is our own child
    if (!alive(pid, binary)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  for (int i = 0; i < 100 && alive(pid, binary); ++i) {
    int status = 0;
    ::waitpid(pid, &status, WNOHANG);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

std::string tail(const std::filesystem::path& file, size_t lines) {
  std::ifstream in(file);
  std::deque<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(std::move(line));
    if (last.size() > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += "    " + l + "\n";
  return out;
}

}  // namespace fnmesh::cli
