#pragma once
// backlog: tells a node which functions have invocations waiting, so that it pulls a
// function with no idle sandbox here only when there is work (DESIGN §4): the doorbell
// that publishers ring after each publish (fnmesh.doorbell.<tenant>.<function>), and the
// per-subject message counts of FNMESH_INVOKE, read with one stream-info request per
// poll() — never by pulling every consumer in a loop. Owns the doorbell subscription; the
// handler runs on nats.c's thread (doorbell) and on poll()'s caller, and must not block.
#include <nats/nats.h>

#include <functional>
#include <memory>
#include <string_view>

#include "broker/client/connection.h"

namespace fnmesh::node {

class backlog {
 public:
  using handler = std::function<void(std::string_view tenant, std::string_view function)>;

  static result<std::unique_ptr<backlog>> open(broker::connection& conn, handler on_work);
  ~backlog();

  // Calls the handler for each function with messages in FNMESH_INVOKE: waiting ones, and
  // also those running or waiting out a retry's back-off (the stream cannot tell them
  // apart), which a no-wait pull then finds taken.
  result<void> poll();

 private:
  backlog(broker::connection& conn, handler on_work) : conn_(conn), on_work_(std::move(on_work)) {}
  static void on_doorbell(natsConnection*, natsSubscription*, natsMsg*, void* self) noexcept;
  // "fnmesh.<kind>.<tenant>.<function>": the handler's arguments.
  void notify(std::string_view subject) noexcept;

  broker::connection& conn_;
  handler on_work_;
  natsSubscription* sub_ = nullptr;
};

}  // namespace fnmesh::node
