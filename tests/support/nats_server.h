#pragma once
// nats_server: a real nats-server with JetStream for one test, on 127.0.0.1 and an
// ephemeral port found through its ports file, with its store and log in a fresh temp
// dir. Owns the process and the dir; use from one thread.
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

namespace fnmesh::test {

struct nats_server_options {
  bool jetstream = true;
  std::string extra_config;  // appended to the generated config file
  // Cluster member: its name, its route port and every member's route port (loopback).
  std::string server_name;
  std::string cluster_name;
  int cluster_port = 0;
  std::vector<int> route_ports;
};

class nats_server {
 public:
  // Starts the server and returns once it answers; throws std::runtime_error otherwise
  // (the message includes the server's log). A cluster member answers before its
  // JetStream has a leader: nats_cluster waits for that.
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
  void write_config();

  nats_server_options opts_;
  temp_dir dir_;
  std::optional<child_process> process_;
  int port_ = 0;
  std::string url_;
};

// nats_cluster: three clustered nats-servers with JetStream on loopback (route ports
// reserved up front, client ports ephemeral). Owns the servers; use from one thread.
class nats_cluster {
 public:
  // Returns once JetStream has a meta leader (streams with 3 replicas can be created);
  // throws std::runtime_error otherwise.
  nats_cluster();
  nats_server& server(size_t i) { return *servers_.at(i); }
  size_t size() const noexcept { return servers_.size(); }
  // Every member's client URL, comma-separated (connect_options::urls).
  std::string urls() const;
  // Waits until a JetStream API call through `url` succeeds.
  static bool wait_jetstream(const std::string& url, std::chrono::milliseconds timeout);
  // Waits until a stream with 3 replicas can be created (every peer known).
  static bool wait_replicated(const std::string& url, std::chrono::milliseconds timeout);

 private:
  std::vector<std::unique_ptr<nats_server>> servers_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_loopback_port();

}  // namespace fnmesh::test
