#pragma once
// invoker: how every edge (CLI, adapters, bench) turns a request into an Invocation on
// NATS: checks the function exists and the payload limit, builds the message and
// publishes it to fnmesh.invoke.<tenant>.<function> with Nats-Msg-Id = invocation id.
// Thread-safe.
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/subjects.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {

struct invocation_request {
  // Empty: a new ULID. Set by edges that must publish the same invocation once however
  // often they retry (the events adapter derives it from the event and the function).
  std::string invocation_id;
  std::string tenant = std::string(default_tenant);
  std::string function;
  std::span<const uint8_t> payload;
  std::string content_type = "application/json";
  proto::Trigger trigger = proto::Trigger::cli;
  std::string source;
  // Sync: the ROUTER endpoint the caller waits on, and its correlation tag.
  std::optional<std::string> reply_endpoint;
  uint64_t correlation = 0;
  // With reply_endpoint: an async invocation whose result still goes there (a callback).
  bool callback = false;
  std::string parent_id;
};

struct published {
  std::string invocation_id;
};

class invoker {
 public:
  // With a registry, function lookups are in memory; without, each call reads KV.
  invoker(connection& conn, function_registry* registry, limits lim = {});

  // errc::not_found for an unknown function, errc::too_large (with the limit in the
  // message logged) for an oversized payload, errc::invalid_argument for a bad name.
  // async_publish: do not wait for the stream's ack (bench, adapters under load).
  result<published> invoke(const invocation_request& req, bool async_publish = false);

  const limits& payload_limits() const noexcept { return limits_; }

 private:
  connection& conn_;
  function_registry* registry_;
  limits limits_;
};

}  // namespace fnmesh::broker
