#pragma once
// Where this build's programs and the source tree are: ctest sets $FNMESH_BIN_DIR,
// $FNMESH_SOURCE_DIR and $FNMESH_BUILD_DIR; run by hand, a test or benchmark falls back to
// the trees it was built from.
#include <filesystem>
#include <string>

namespace fnmesh::test {

std::filesystem::path source_dir();
std::filesystem::path build_dir();
// A program built with the project: <bin dir>/<name>.
std::filesystem::path bin(const std::string& name);

}  // namespace fnmesh::test
