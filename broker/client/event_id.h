#pragma once
// The invocation id one event gives one subscriber: a valid ULID whose time part is the
// event's stored time and whose 80 "random" bits are a hash of (stream sequence, function
// key). A redelivered event therefore republishes the same id, and JetStream's duplicate
// window on FNMESH_INVOKE drops the copy.
#include <cstdint>
#include <string>
#include <string_view>

namespace fnmesh::broker {

// function_key: tenant and function ("default.resize"), so equal names in two tenants
// get different ids. Pure: the same inputs always give the same id.
std::string event_invocation_id(int64_t event_unix_ns, uint64_t stream_seq,
                                std::string_view function_key);

}  // namespace fnmesh::broker
