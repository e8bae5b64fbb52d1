#pragma once
// The local mesh's processes: finding the binaries, ports, starting daemons in the
// background (own session, log file, pid file) and stopping them. Used by up/down/status
// from the CLI's main thread.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace fnmesh::cli {

// One daemon of the local mesh.
struct daemon_process {
  std::string name;                 // nats-server, fnmesh-collector, ...
  std::filesystem::path binary;
  std::vector<std::string> args;    // without argv[0]
  std::string endpoint;             // what status shows ("" when it listens nowhere)
  pid_t pid = -1;
};

// The Debian nats-server: on PATH, else /usr/sbin or /usr/bin.
std::optional<std::filesystem::path> find_nats_server();
// A binary next to this one (/proc/self/exe's folder).
std::filesystem::path sibling_binary(std::string_view name);

// A port that was free when asked (bound on 127.0.0.1 port 0, then released). `n` at once
// so that they differ.
result<std::vector<int>> pick_free_ports(size_t n);
bool port_free(int port);
// A TCP connect to 127.0.0.1:port succeeds.
bool port_answers(int port);

// Starts `d` in its own session, stdin from /dev/null, stdout and stderr to `log`
// (truncated). Sets d.pid.
result<void> spawn(daemon_process& d, const std::filesystem::path& log);

// The process runs (not a zombie) and is the one we started: its argv[0] is `binary`.
bool alive(pid_t pid, const std::filesystem::path& binary);
// For a child of this process: reaps it if it exited; true while it runs.
bool child_running(pid_t pid);

// SIGTERM, then SIGKILL after `grace`; returns true if it had to kill.
bool stop(pid_t pid, const std::filesystem::path& binary, std::chrono::milliseconds grace);

// The last `lines` lines of a file ("" if unreadable).
std::string tail(const std::filesystem::path& file, size_t lines);

}  // namespace fnmesh::cli
