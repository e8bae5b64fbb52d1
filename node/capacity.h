#pragma once
// capacity: decides what a node pulls (DESIGN §4). Each idle warm sandbox is a waiting
// pull request on its function's consumer, so JetStream hands new work to warm sandboxes
// anywhere in the mesh first. A function with backlog (doorbell, pending counts) is pulled
// "cold" with a no-wait request for what the free slots can start now. Slots and memory
// held by waiting requests and running invocations never exceed the node's; a cold pull
// may borrow slots that other functions' idle sandboxes wait with (else those would starve
// every other function until keep_warm), and a delivery that then finds no room is handed
// back. Thread-safe (one mutex): deliveries and request ends come from the nats.c thread,
// finishes from the executor's, refills also from the heartbeat thread.
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"

namespace fnmesh::node {

struct capacity_function {
  std::string consumer;         // the function's durable consumer, also its key here
  std::string function;         // executor::function_of: how its warm sandboxes are counted
  int64_t memory_bytes = 0;     // held by each running or reserved invocation
  uint32_t concurrency = 0;     // per function on this node; 0 = unlimited
};

enum class pull_kind {
  warm,  // waits on the server until an invocation comes (an idle sandbox's request)
  cold,  // no-wait: takes what is queued now, ends at once
};

class capacity {
 public:
  // Sends one pull request; returns its id. Called with the lock held: it must not block.
  using issue_fn =
      std::function<result<uint64_t>(const std::string& consumer, uint32_t batch, pull_kind kind)>;
  // Live warm sandboxes (idle or busy) of a "tenant/function". Called with the lock held:
  // it must not block.
  using warm_fn = std::function<uint32_t(const std::string& function)>;

  capacity(uint32_t slots, int64_t memory_bytes, issue_fn issue, warm_fn warm);

  // The deployed functions; removed ones keep their running count until finished.
  void set_functions(const std::vector<capacity_function>& functions);
  // Invocations of `consumer` may wait to be pulled: the next refill pulls it cold, unless
  // one of this node's sandboxes already waits for it.
  void on_backlog(const std::string& consumer);
  // Issues the pull requests that idle sandboxes and free room allow.
  void refill(int64_t now_ms);
  // A request ended on the server (see pull_requests::end_handler): what it did not
  // deliver is free again.
  void on_request_end(uint64_t request_id, int status, int64_t now_ms);
  // A message of `consumer` arrived for `request_id`: its reservation becomes a running
  // slot (a message whose request already ended takes free room if there is any). Returns
  // the memory the slot holds, to give back to on_finished; nullopt when it cannot run
  // here (draining, no room, unknown function): hand it back, another node takes it.
  std::optional<int64_t> on_delivery(const std::string& consumer, uint64_t request_id);
  void on_finished(const std::string& consumer, int64_t memory_bytes);
  // Stops issuing requests and taking deliveries (drain).
  void stop();

  uint32_t slots() const noexcept { return slots_; }
  uint32_t running() const;
  uint32_t reserved() const;

 private:
  struct held {
    uint32_t slots = 0;
    int64_t memory = 0;
    void add(int32_t n, int64_t memory_each) {
      slots += n;
      memory += n * memory_each;
    }
    friend held operator+(held a, const held& b) { return {a.slots + b.slots, a.memory + b.memory}; }
  };
  struct function_state {
    capacity_function spec;
    bool deployed = true;
    bool backlog = false;
    uint32_t running = 0;
    uint32_t warm_reserved = 0;
    uint32_t cold_reserved = 0;
    int64_t backoff_until_ms = 0;
    uint32_t used() const { return running + warm_reserved + cold_reserved; }
  };
  struct request {
    std::string consumer;
    pull_kind kind;
    uint32_t remaining;
    int64_t memory_each;
  };
  // What `f` may take on top of `taken` (slots and memory already spoken for).
  uint32_t room(const function_state& f, const held& taken) const;
  bool issue(function_state& f, uint32_t batch, pull_kind kind);
  void release(function_state& f, pull_kind kind, uint32_t n, int64_t memory_each);
  void forget_if_idle(const std::string& consumer);

  mutable std::mutex mutex_;
  const uint32_t slots_;
  const int64_t memory_bytes_;
  issue_fn issue_;
  warm_fn warm_;
  bool stopped_ = false;
  held running_, warm_reserved_, cold_reserved_;  // all functions
  std::unordered_map<std::string, function_state> functions_;
  std::unordered_map<uint64_t, request> requests_;  // outstanding, by request id
  size_t round_robin_ = 0;
};

}  // namespace fnmesh::node
