#pragma once
// The rule for tenant and function names: they go into NATS subjects, cgroup paths and
// key files, so [a-z0-9][a-z0-9-]{0,62}.
#include <string_view>

namespace fnmesh {

inline bool valid_name(std::string_view name) noexcept {
  const auto lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (name.empty() || name.size() > 63 || !lower_alnum(name[0])) return false;
  for (char c : name)
    if (!lower_alnum(c) && c != '-') return false;
  return true;
}

}  // namespace fnmesh
