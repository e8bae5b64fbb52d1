// echo: returns its payload unchanged; the no-op function the benchmarks run.
#include <string>

#include "node/runtimes/native/fnmesh_runtime.h"

int main() {
  return fnmesh::runtime::serve(
      [](const fnmesh::runtime::request& req) { return std::string(req.payload); });
}
