#pragma once
// child_process: one program started by a test (a real fnmesh daemon, nats-server), its
// stdout and stderr appended to a log file. Owns the process: the destructor kills and
// reaps it (and its process group) if it still runs. Use from one thread.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fnmesh::test {

struct spawn_options {
  std::filesystem::path program;
  std::vector<std::string> args;                             // without argv[0]
  std::vector<std::pair<std::string, std::string>> env;      // added to (or replacing) ours
  std::filesystem::path log;                                 // stdout+stderr; empty: inherit
  std::filesystem::path cwd;                                 // empty: ours
};

class child_process {
 public:
  // Throws std::system_error when the program cannot be started (exec failure included).
  static child_process spawn(const spawn_options& opts);
  ~child_process();
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;

  pid_t pid() const noexcept { return pid_; }
  bool running();
  bool signal(int sig) noexcept;
  // The exit code (128 + signal number when killed), or nullopt if still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL after `grace`; returns the exit code.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  std::optional<int> exit_code() const noexcept { return exit_code_; }

  const std::filesystem::path& log_path() const noexcept { return log_; }
  std::string log_text() const;
  // Polls the log until it contains `needle`; false on timeout or if the process exits.
  bool wait_for_log(std::string_view needle, std::chrono::milliseconds timeout);

 private:
  child_process(pid_t pid, std::filesystem::path log) : pid_(pid), log_(std::move(log)) {}
  void reap_now() noexcept;

  pid_t pid_ = -1;
  std::filesystem::path log_;
  std::optional<int> exit_code_;
};

// Finds `name` on PATH, then in /usr/sbin and /usr/local/bin; empty when absent.
std::filesystem::path find_program(std::string_view name);

}  // namespace fnmesh::test
