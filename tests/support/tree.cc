#include "tests/support/tree.h"

#include <cstdlib>

namespace fnmesh::test {
namespace {

std::filesystem::path env_or(const char* name, const std::filesystem::path& built) {
  const char* v = std::getenv(name);
  return v && *v ? std::filesystem::path(v) : built;
}

}  // namespace

std::filesystem::path source_dir() { return env_or("FNMESH_SOURCE_DIR", FNMESH_TEST_SOURCE_DIR); }
std::filesystem::path build_dir() { return env_or("FNMESH_BUILD_DIR", FNMESH_TEST_BUILD_DIR); }
std::filesystem::path bin(const std::string& name) { return env_or("FNMESH_BIN_DIR", build_dir() / "bin") / name; }

}  // namespace fnmesh::test
