#pragma once
// The JetStream objects fnmesh needs, created idempotently: any process may call these.
#include <chrono>

#include "broker/client/connection.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {

struct topology_options {
  int replicas = 0;                                  // 0: 3 when the connection knows 3+ servers, else 1
  std::chrono::seconds ack_grace{5};                 // AckWait = timeout + grace, at most max_ack_wait
};

// A dead node's invocations run elsewhere after at most this; nodes send in-progress acks
// for runs that last longer.
inline constexpr std::chrono::seconds max_ack_wait{30};
// The AckWait of a function's consumer. Nodes send in-progress acks every third of it.
std::chrono::seconds ack_wait(const proto::FunctionSpec& spec, const topology_options& opts = {});

// Streams FNMESH_INVOKE (work queue, file storage, 2 min duplicate window),
// FNMESH_EVENTS (limits, file), FNMESH_DLQ, FNMESH_LOGS (limits, file, 24 h and 256 MiB,
// oldest lines dropped first), and KV buckets FNMESH_FUNCTIONS, FNMESH_CODE,
// FNMESH_NODES (TTL 15 s). Existing objects are left as they are.
result<void> bootstrap(connection& conn, const topology_options& opts = {});

// The durable pull consumer of one function (fn_<tenant>_<function>), filtered to its
// invoke subject: explicit ack, AckWait = ack_wait(spec), MaxAckPending = concurrency when
// set, no MaxDeliver: a redelivery after a node died runs the same attempt again, and the
// node itself retries a failed attempt by publishing the next (spec.retries, retry_delay_s)
// and dead-letters the last. Updated in place when the spec changes.
result<void> ensure_function_consumer(connection& conn, const proto::FunctionSpec& spec,
                                      const topology_options& opts = {});
result<void> remove_function_consumer(connection& conn, std::string_view tenant,
                                      std::string_view function);

}  // namespace fnmesh::broker
