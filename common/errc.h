#pragma once
// Error codes shared by every component for failures that are not a system call's errno.
#include <system_error>

namespace fnmesh {

enum class errc {
  ok = 0,
  invalid_argument = 1,  // a caller's input is wrong (bad name, bad manifest field)
  malformed,             // a received buffer failed verification
  too_large,             // a payload over the configured limit
  not_found,             // no such function / invocation / key
  timeout,               // a deadline passed
  unavailable,           // a peer (NATS, collector) cannot be reached
  closed,                // the other side went away
};

const std::error_category& fnmesh_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), fnmesh_category()};
}

}  // namespace fnmesh

template <>
struct std::is_error_code_enum<fnmesh::errc> : std::true_type {};
