#pragma once
// The JetStream objects fnmesh needs, created idempotently: any process may call these.
#include <chrono>

#include "broker/client/connection.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {

struct topology_options {
  int replicas = 1;                                  // 3 on a 3-server cluster
  std::chrono::seconds ack_grace{5};                 // AckWait = timeout + grace
};

// Streams FNMESH_INVOKE (work queue, file storage, 2 min duplicate window),
// FNMESH_EVENTS (limits, file), FNMESH_DLQ, FNMESH_LOGS (limits, file, 24 h and 256 MiB,
// oldest lines dropped first), and KV buckets FNMESH_FUNCTIONS, FNMESH_CODE,
// FNMESH_NODES (TTL 15 s). Existing objects are left as they are.
result<void> bootstrap(connection& conn, const topology_options& opts = {});

// The durable pull consumer of one function (fn_<tenant>_<function>), filtered to its
// invoke subject: explicit ack, AckWait = timeout + grace, MaxDeliver = retries + 1,
// MaxAckPending = concurrency when set. Updated in place when the spec changes.
result<void> ensure_function_consumer(connection& conn, const proto::FunctionSpec& spec,
                                      const topology_options& opts = {});
result<void> remove_function_consumer(connection& conn, std::string_view tenant,
                                      std::string_view function);

}  // namespace fnmesh::broker
