#pragma once
// capacity: decides what a node pulls. Every slot is either free, reserved by an
// outstanding pull request, or running; reserved + running never exceeds the node's
// slots or memory budget, so the node never takes more than it can start now. Each
// deployed function keeps one waiting request; functions whose last request was fully
// served ("hungry") share the rest. Each reservation remembers the memory it holds, so a
// redeploy with another size releases exactly what was taken. Thread-safe (one mutex):
// deliveries and request ends come from the nats.c thread, finishes from the executor's.
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
  int64_t memory_bytes = 0;     // held by each running or reserved invocation
  uint32_t concurrency = 0;     // per function on this node; 0 = unlimited
};

class capacity {
 public:
  // Sends one pull request; returns its id. Called with the lock held: it must not block.
  using issue_fn = std::function<result<uint64_t>(const std::string& consumer, uint32_t batch,
                                                  bool hungry)>;

  capacity(uint32_t slots, int64_t memory_bytes, issue_fn issue);

  // The deployed functions; removed ones keep their running count until finished.
  void set_functions(const std::vector<capacity_function>& functions);
  // Issues the pull requests the free capacity allows.
  void refill(int64_t now_ms);
  // A request ended on the server (see pull_requests::end_handler): what it did not
  // deliver is free again.
  void on_request_end(uint64_t request_id, int status, int64_t now_ms);
  // A message of `consumer` arrived for `request_id`: its reservation becomes a running
  // slot (a message whose request already ended takes free room if there is any). Returns
  // the memory the slot holds, to give back to on_finished; nullopt when it cannot run
  // here (draining without a reservation, no room, unknown function): hand it back.
  std::optional<int64_t> on_delivery(const std::string& consumer, uint64_t request_id);
  void on_finished(const std::string& consumer, int64_t memory_bytes);
  // Stops issuing requests (drain); deliveries already reserved still run.
  void stop();

  uint32_t slots() const noexcept { return slots_; }
  uint32_t running() const;
  uint32_t reserved() const;

 private:
  struct function_state {
    capacity_function spec;
    bool deployed = true;
    uint32_t reserved = 0;
    uint32_t running = 0;
    uint32_t waiting_requests = 0;
    bool hungry = false;
    int64_t backoff_until_ms = 0;
  };
  struct request {
    std::string consumer;
    uint32_t remaining;
    int64_t memory_each;
  };
  uint32_t room(const function_state& f) const;
  bool issue(function_state& f, uint32_t batch);
  void forget_if_idle(const std::string& consumer);

  mutable std::mutex mutex_;
  const uint32_t slots_;
  const int64_t memory_bytes_;
  issue_fn issue_;
  bool stopped_ = false;
  uint32_t used_slots_ = 0;      // reserved + running, all functions
  int64_t used_memory_ = 0;
  std::unordered_map<std::string, function_state> functions_;
  std::unordered_map<uint64_t, request> requests_;  // outstanding, by request id
  size_t round_robin_ = 0;
};

}  // namespace fnmesh::node
