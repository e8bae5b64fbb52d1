// fnmesh-zygote: makes spare sandboxes for native, nodejs and exec functions, which exec
// their program when the node assigns them one (node/sandbox/zygote.h). A small process:
// each spare is a cheap copy of it. Started by fnmesh-node.
#include <CLI/CLI.hpp>

#include "node/sandbox/zygote.h"

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-zygote: makes spare sandboxes for fnmesh-node (started by it, with a socket at fd 3)"};
  std::string staging;
  app.add_option("--staging", staging, "the node's staging directory")->required();
  CLI11_PARSE(app, argc, argv);
  return fnmesh::node::serve_zygote({.staging = staging});
}
