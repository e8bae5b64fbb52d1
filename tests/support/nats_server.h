#pragma once
// nats_server: a real nats-server with JetStream for one test, on 127.0.0.1 and an
// ephemeral port found through its ports file, with its store and log in a fresh temp
// dir. Owns the process and the dir; use from one thread.
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

namespace fnmesh::test {

struct nats_server_options {
  bool jetstream = true;
  std::string extra_config;  // appended to the generated config file
};

class nats_server {
 public:
  // Starts the server and returns once it answers; throws std::runtime_error otherwise
  // (the message includes the server's log).
  explicit nats_server(nats_server_options opts = {});
  ~nats_server();

  const std::string& url() const noexcept { return url_; }  // nats://127.0.0.1:PORT
  int port() const noexcept { return port_; }
  const std::filesystem::path& dir() const noexcept { return dir_.path(); }
  bool running();

  void stop();     // SIGTERM, waits for exit
  void kill();     // SIGKILL
  void restart();  // starts again on the same port with the same store (after stop/kill)
  std::string log_text() const;

  // nats-server from FNMESH_NATS_SERVER, PATH or /usr/sbin; empty when not installed.
  static std::filesystem::path binary();

 private:
  void start(int port);

  nats_server_options opts_;
  temp_dir dir_;
  std::optional<child_process> process_;
  int port_ = 0;
  std::string url_;
};

}  // namespace fnmesh::test
