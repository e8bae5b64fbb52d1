#pragma once
// invocation_queue: a test's stand-in for the nodes of one function — it pulls (and acks)
// whatever the adapters under test publish to fnmesh.invoke.<tenant>.<function>, through
// the function's own durable consumer. Owns the pull subscription; use from one thread.
#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "broker/client/connection.h"

namespace fnmesh::test {

class invocation_queue {
 public:
  // The function must be deployed (its consumer exists). Throws std::runtime_error.
  invocation_queue(broker::connection& conn, std::string_view function,
                   std::string_view tenant = "default");
  ~invocation_queue();
  invocation_queue(const invocation_queue&) = delete;
  invocation_queue& operator=(const invocation_queue&) = delete;

  // Every invocation that arrives within `wait`, acked; each buffer verified (a buffer
  // that fails verification fails the test).
  std::vector<std::vector<uint8_t>> pull(std::chrono::milliseconds wait);
  // Pulls until nothing new arrives for `idle`: every invocation id seen, in order.
  std::vector<std::string> drain_ids(std::chrono::milliseconds idle);

 private:
  natsSubscription* sub_ = nullptr;
};

}  // namespace fnmesh::test
