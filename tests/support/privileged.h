#pragma once
// Tests that need root (namespaces, cgroups, BPF) skip without it, unless the run sets
// FNMESH_REQUIRE_PRIVILEGED=1 (as CI does): then a missing privilege is a failure.
#include <cstdlib>
#include <string_view>

namespace fnmesh::test {

inline bool require_privileged() {
  const char* v = std::getenv("FNMESH_REQUIRE_PRIVILEGED");
  return v && std::string_view(v) == "1";
}

}  // namespace fnmesh::test
