#pragma once
// copy_invocation: an Invocation re-encoded with another attempt (a node's retry, a DLQ
// entry) or as a new invocation (a DLQ redrive). Every other field is kept.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "flatbuffers/proto.h"

namespace fnmesh::broker {

struct invocation_changes {
  uint32_t attempt = 1;
  std::optional<std::string> id;            // a redrive publishes a new invocation
  std::optional<int64_t> published_ns;      // ... published now
};

std::vector<uint8_t> copy_invocation(const proto::Invocation& inv, const invocation_changes& changes);

}  // namespace fnmesh::broker
