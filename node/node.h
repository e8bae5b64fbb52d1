#pragma once
// node: one fnmesh-node. Pulls the invocations its free capacity allows from every
// deployed function's consumer, runs them on the executor, sends each Result straight to
// its caller, spools the Completion for the collector, retries a failed async attempt or
// dead-letters the last one, and only then acks JetStream. While an invocation runs, its
// delivery gets in-progress acks, so only a dead node's invocations are redelivered.
// Owns the NATS connection, the registry watch, the executor, the reporter and /metrics;
// its methods are called from main's thread, its callbacks run on nats.c and executor
// threads, /metrics renders on the endpoint's thread.
#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/kv.h"
#include "broker/client/log_publisher.h"
#include "broker/client/pull_requests.h"
#include "broker/client/subjects.h"
#include "common/metrics_endpoint.h"
#include "node/backlog.h"
#include "node/capacity.h"
#include "node/code_cache.h"
#include "node/follow_ups.h"
#include "node/node_metrics.h"
#include "node/reporter.h"
#include "node/result_sender.h"
#include "node/sandbox/executor.h"

namespace fnmesh::node {

// What finish() needs of an invocation once its buffer went to the runtime.
struct invocation_info {
  std::string id, tenant, function, reply_endpoint;
  uint64_t correlation = 0;
  bool callback = false;  // async with a reply endpoint: only the final result goes there
  proto::Trigger trigger = proto::Trigger::cli;
  int64_t published_ns = 0;
  uint32_t attempt = 1;   // from the message: a redelivery runs the same attempt again
  int64_t memory_held = 0;  // what its capacity slot holds, given back when it finishes
};

struct node_options {
  std::string nats_urls = "nats://127.0.0.1:4222";
  std::string collector = "tcp://127.0.0.1:7700";
  std::filesystem::path dir = ".fnmesh/node";   // spool and code cache
  std::string node_id;                          // default: hostname-<random>
  std::map<std::string, std::string> labels;    // placement: a function's labels must match
  uint32_t slots = 16;
  int64_t memory_bytes = 0;                     // 0: 80 % of the machine
  std::chrono::seconds keep_warm{300};
  std::chrono::seconds heartbeat{5};
  std::string metrics_listen = "127.0.0.1:0";   // Prometheus /metrics; port 0: a free one
  broker::limits limits;
  executor_options runtime;
};

class node {
 public:
  // Connects, loads the registry and starts pulling. Throws with one clear line when a
  // dependency (NATS, the spool) is missing.
  explicit node(node_options opts);
  ~node();

  // SIGTERM: stop pulling, hand back what arrives, finish what runs, flush the spool.
  void drain(std::chrono::milliseconds flush_timeout);
  const std::string& id() const noexcept { return opts_.node_id; }
  const std::string& metrics_url() const noexcept { return metrics_endpoint_->url(); }

 private:
  void on_functions_changed();
  void on_delivery(broker::delivery&& d);
  void finish(const broker::function_ptr& fn, const std::shared_ptr<broker::delivery>& d, outcome&& out,
              const invocation_info& inv);
  // A failed async attempt is followed by the next attempt, published with its back-off,
  // or by a dead letter, on follow_ups_'s thread. Both fail when NATS did not take them:
  // the delivery is then nak'ed (nak_unfollowed) and the attempt runs again.
  result<void> retry(const broker::function_ptr& fn, const broker::delivery& d,
                     const invocation_info& inv);
  result<void> dead_letter(const broker::delivery& d, const invocation_info& inv,
                           std::string_view status, std::string_view error, uint32_t attempts);
  // Invocations not yet acked (capacity frees a slot before its ack is sent).
  size_t unacked();
  void nak_unfollowed(const broker::delivery& d, const invocation_info& inv, std::error_code why);
  // Done with an invocation: no more in-progress acks.
  void forget(const std::string& invocation_id);
  void send_progress();
  void heartbeat_loop();
  static int64_t now_ms();

  node_options opts_;
  zmq::context_t zmq_;
  std::unique_ptr<broker::connection> conn_;
  std::unique_ptr<broker::kv_bucket> code_bucket_;
  std::unique_ptr<broker::kv_bucket> nodes_bucket_;
  std::unique_ptr<code_cache> code_;
  std::unique_ptr<reporter> reporter_;
  std::unique_ptr<capacity> capacity_;
  std::unique_ptr<result_sender> sender_;       // executor loop thread only
  std::unique_ptr<broker::log_publisher> logs_; // executor loop thread only
  std::unique_ptr<follow_ups> follow_ups_;
  std::unique_ptr<executor> executor_;
  std::unique_ptr<broker::pull_requests> pulls_;
  std::unique_ptr<backlog> backlog_;
  std::unique_ptr<broker::function_registry> registry_;
  // What the registry's watch thread reads: set once started, valid until registry_ dies.
  std::atomic<const broker::function_registry*> registry_view_{nullptr};
  // Invocations running here, by id: a redelivery of one is not run twice, and each gets
  // an in-progress ack every third of its AckWait. Written by the nats.c thread and the
  // executor's, read by the heartbeat thread.
  struct running_invocation {
    std::shared_ptr<broker::delivery> delivery;
    int64_t progress_every_ms = 0;
    int64_t next_progress_ms = 0;
  };
  std::mutex in_flight_mutex_;
  std::unordered_map<std::string, running_invocation> in_flight_;
  std::atomic<bool> stopping_{false};  // draining: no more pulls
  std::atomic<bool> closing_{false};   // destroying: the heartbeat thread ends
  int64_t started_ns_ = 0;
  std::thread heartbeat_;
  node_metrics metrics_;  // counted in finish(), rendered on the endpoint's thread
  // Declared last: destroyed first, so /metrics never renders from a half-built node.
  std::unique_ptr<metrics_endpoint> metrics_endpoint_;
};

}  // namespace fnmesh::node
