#pragma once
// mesh: a gtest fixture with a real mesh for one test — nats-server, fnmesh-collector,
// fnmesh-node processes started on demand and the fnmesh CLI run against them — plus the
// caller's side: invoking over NATS, receiving results over ZeroMQ, querying the collector.
// Failure helpers kill and restart nodes, the collector and (cluster mode) nats-servers.
// Owns every process and the temp dir; used from the test's thread only.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
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

using attempt_list = std::vector<std::pair<uint32_t, proto::Status>>;  // (attempt, status)

// One entry of FNMESH_DLQ as `fnmesh dlq ls --json` lists it.
struct dead_letter {
  uint64_t seq = 0;
  std::string id, tenant, function, status, node, error;
  uint32_t attempts = 0;
};

class mesh : public ::testing::Test {
 protected:
  // nats-server (three clustered ones with cluster_mode_), the collector, a reply router;
  // no node yet.
  void SetUp() override;
  // Nodes still running get SIGTERM: they drain and remove their sandboxes' cgroups (a
  // SIGKILL would leave those to the next start with the same node id).
  void TearDown() override;

  // Starts the collector on collector_endpoint_ (and its HTTP API on collector_http_port_)
  // and waits until it answers.
  void start_collector();
  // SIGKILL to the collector, reaped; start_collector() brings it back on the same
  // endpoints and database.
  void kill_collector();
  // Starts fnmesh-node `name` (its dir under dir_) and waits for "ready".
  child_process& start_node(const std::string& name, std::vector<std::string> extra = {});
  // SIGKILL to node `name`, reaped; its dir (spool, code cache) stays for restart_node().
  void kill_node(const std::string& name);
  // Starts node `name` again with the id, dir and arguments of its first start (a killed
  // or stopped one), logging to a new file, and waits for "ready".
  child_process& restart_node(const std::string& name);

  // The NATS URL(s) nodes and the CLI get: every server's, comma-separated, in cluster mode.
  std::string nats_urls() const;

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
  // Publishes with the given invocation id, again with the same id while NATS refuses (a
  // leader election, a server down) until `patience` ends: JetStream stores it once.
  result<broker::published> invoke_until_stored(const std::string& fn, const std::string& payload,
                                                const std::string& invocation_id, bool sync = false,
                                                std::chrono::milliseconds patience = std::chrono::seconds(60));
  broker::result_message receive(const std::string& invocation_id, std::chrono::milliseconds timeout);
  broker::result_message call(const std::string& fn, const std::string& payload,
                              std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // Every stored attempt of an invocation: (attempt, status).
  attempt_list attempts(const std::string& invocation_id);
  // Polls the collector until `settled` holds for the attempts of every id, or `timeout`
  // passes; returns each id with its attempts as last read (all of them, settled or not).
  std::map<std::string, attempt_list> wait_settled(const std::vector<std::string>& ids,
                                                   const std::function<bool(const attempt_list&)>& settled,
                                                   std::chrono::milliseconds timeout);
  // What `fnmesh dlq ls --json --limit 0` lists (every dead letter of the default tenant);
  // a failing CLI is a test failure and an empty list.
  std::vector<dead_letter> dead_letters(const std::vector<std::string>& extra = {});
  // Invocations billed per `group_by` ("function", "node").
  std::map<std::string, uint64_t> billed(const std::string& group_by = "function");

  // Set in a fixture's constructor: SetUp starts a 3-server JetStream cluster (cluster_)
  // instead of nats_, and every stream gets 3 replicas.
  bool cluster_mode_ = false;
  temp_dir dir_{"fnmesh-mesh"};
  std::optional<nats_server> nats_;
  std::optional<nats_cluster> cluster_;
  zmq::context_t zmq_{1};
  std::string collector_endpoint_;
  int collector_http_port_ = 0;  // the HTTP query API; admin_token reads every tenant
  static constexpr const char* admin_token = "mesh-test-admin-token-0123456789";
  std::unique_ptr<broker::connection> conn_;
  std::optional<child_process> collector_;
  std::map<std::string, child_process> nodes_;
  std::map<std::string, std::vector<std::string>> node_args_;  // each node's extra arguments
  std::map<std::string, int> node_starts_;                      // how often each was started
  std::unique_ptr<broker::reply_router> router_;
  std::unique_ptr<broker::invoker> invoker_;
  uint64_t correlation_ = 0;
  uint64_t refused_publishes_ = 0;  // tries invoke_until_stored had to repeat
  int cli_runs_ = 0;
};

}  // namespace fnmesh::test
