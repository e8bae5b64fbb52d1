#pragma once
// result<T>: the return type of everything that can fail at run time (no exceptions on
// the data path). Errors are std::error_code from a component's own category.
#include <expected>
#include <system_error>

namespace fnmesh {

template <class T>
using result = std::expected<T, std::error_code>;

inline std::unexpected<std::error_code> fail(std::error_code ec) { return std::unexpected(ec); }

// The errno of the last failed system call, as an error.
inline std::unexpected<std::error_code> fail_errno(int e) {
  return std::unexpected(std::error_code(e, std::system_category()));
}

}  // namespace fnmesh
