#pragma once
// mesh: a gtest fixture with a real mesh for one test — nats-server, fnmesh-collector,
// fnmesh-node processes started on demand and the fnmesh CLI run against them — plus the
// caller's side: invoking over NATS, receiving results over ZeroMQ, querying the collector.
// Owns every process and the temp dir; used from the test's thread only.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "broker/client/connection.h"
#include "broker/client/invoker.h"
#include "broker/client/reply_router.h"
#include "tests/support/child_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fnmesh::test {

class mesh : public ::testing::Test {
 protected:
  void SetUp() override;  // nats-server, the collector, a reply router; no node yet
  // Nodes still running get SIGTERM: they drain and remove their sandboxes' cgroups (a
  // SIGKILL would leave those to the next start with the same node id).
  void TearDown() override;

  // Starts the collector on collector_endpoint_ (and its HTTP API on collector_http_port_)
  // and waits until it answers.
  void start_collector();
  // Starts fnmesh-node `name` (its dir under dir_) and waits for "ready".
  child_process& start_node(const std::string& name, std::vector<std::string> extra = {});

  // `fnmesh <args>` against this mesh, with a home of its own.
  std::string command(const std::vector<std::string>& args);
  // Started now, read with finish(run): several can run at once.
  child_process start_cli(const std::vector<std::string>& args, int run);
  cli_run finish(child_process& proc, int run);
  cli_run cli(const std::vector<std::string>& args);
  void deploy(const std::filesystem::path& folder);

  // A python3 function written for this test; `manifest_extra` lines go below its handler.
  std::filesystem::path write_function(const std::string& name, const std::string& manifest_extra,
                                       const std::string& body);

  // Published on NATS; a sync invocation's result comes to receive().
  result<broker::published> invoke(const std::string& fn, const std::string& payload, bool sync = true);
  broker::result_message receive(const std::string& invocation_id, std::chrono::milliseconds timeout);
  broker::result_message call(const std::string& fn, const std::string& payload,
                              std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // Every stored attempt of an invocation: (attempt, status).
  std::vector<std::pair<uint32_t, proto::Status>> attempts(const std::string& invocation_id);
  // Invocations billed per `group_by` ("function", "node").
  std::map<std::string, uint64_t> billed(const std::string& group_by = "function");

  temp_dir dir_{"fnmesh-mesh"};
  std::optional<nats_server> nats_;
  zmq::context_t zmq_{1};
  std::string collector_endpoint_;
  int collector_http_port_ = 0;  // the HTTP query API; admin_token reads every tenant
  static constexpr const char* admin_token = "mesh-test-admin-token-0123456789";
  std::unique_ptr<broker::connection> conn_;
  std::optional<child_process> collector_;
  std::map<std::string, child_process> nodes_;
  std::unique_ptr<broker::reply_router> router_;
  std::unique_ptr<broker::invoker> invoker_;
  uint64_t correlation_ = 0;
  int cli_runs_ = 0;
};

}  // namespace fnmesh::test
