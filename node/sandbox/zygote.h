#pragma once
// zygote: the loop of a process that makes spare sandboxes for the node (fnmesh-zygote,
// fnmesh-python-zygote). It is started by the node's launcher with a SOCK_SEQPACKET
// socket at fd 3; each SpareRequest makes one spare (make_spare with CLONE_PARENT: the
// sandbox is the node's child, which reaps it) and is answered with a SpareReply and, as
// SCM_RIGHTS, the node's end of the spare's control socket. A zygote is single-threaded,
// so that each copy of it may allocate; it exits when the node closes the socket.
#include <filesystem>

#include "node/sandbox/sandbox.h"

namespace fnmesh::node {

constexpr int zygote_control_fd = 3;

struct zygote_options {
  std::filesystem::path staging;            // the node's staging directory (its base root is there)
  bool prefault = false;                    // see spare_plan::prefault
  const zygote_runtime* runtime = nullptr;  // a runtime that goes on in its sandboxes (python)
};

// Serves the node until it closes the socket; returns the process's exit code.
int serve_zygote(const zygote_options& opts);

}  // namespace fnmesh::node
