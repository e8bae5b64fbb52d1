#pragma once
// check: what this machine offers fnmesh-node (`fnmesh-node --check`, DESIGN §6): the
// kernel, BTF, CAP_BPF and whether the BPF meters load (else CPU comes from cgroups),
// the cgroup versions and controllers, seccomp, user namespaces, and whether the node can
// make sandboxes here at all. Reads /proc and /sys; loads the BPF meter once and unloads it.
#include <string>

namespace fnmesh::node {

struct machine_check {
  std::string text;        // one line per item, for people
  bool can_run = false;    // root, cgroups, seccomp and user namespaces: sandboxes work
};

machine_check check_machine();

}  // namespace fnmesh::node
