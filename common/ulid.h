#pragma once
// ULIDs: 128-bit ids, 48-bit millisecond time + 80 random bits, as 26 Crockford base32
// characters. Sortable by creation time; used for invocation ids. Thread-safe.
#include <string>
#include <string_view>

namespace fnmesh {

std::string new_ulid();
bool is_ulid(std::string_view text) noexcept;

}  // namespace fnmesh
