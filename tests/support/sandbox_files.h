#pragma once
// The files a launcher runs sandboxes with, from this build and source tree: the zygotes
// and the runtimes' shims. For tests and benchmarks that make an executor of their own.
#include <filesystem>
#include <string>
#include <utility>

#include "node/sandbox/launcher.h"
#include "tests/support/tree.h"

namespace fnmesh::test {

inline node::launcher_options sandbox_files(std::string node_id, std::filesystem::path staging) {
  return {.node_id = std::move(node_id),
          .staging = std::move(staging),
          .zygote = build_dir() / "bin/fnmesh-zygote",
          .python_zygote = build_dir() / "bin/fnmesh-python-zygote",
          .python_shim_dir = source_dir() / "node/runtimes/python",
          .python_proto_dir = build_dir() / "python",
          .nodejs_shim = source_dir() / "node/runtimes/nodejs/shim.js"};
}

}  // namespace fnmesh::test
