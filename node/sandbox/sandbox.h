#pragma once
// sandbox: starts one process inside a fresh sandbox (DESIGN §5). clone3 makes the
// process with new pid, mount, ipc, uts (and, under network policy none, net) namespaces
// straight into its cgroup v2 directory (CLONE_INTO_CGROUP); with the node's credentials
// it builds its root from the node's read-only base (the host's /bin, /lib* links, a
// minimal /etc and /dev), /usr read-only, the code read-only at /var/task, a capped tmpfs
// /tmp and a new /proc, and pivots into it.
// Then it enters its own user namespace, which owns none of the others, while the caller
// maps its uid and attaches its v1 cgroups; it runs as uid 1000 (nobody outside) with
// every capability dropped, no_new_privs and the seccomp filter. Its pid 1 is a minimal
// init that reaps and exits as the runtime did (a signal as 128 + its number).
//
// sandbox_host holds what is read once per node (the host's layout, the staging
// directory: every sandbox builds its root on it, each in its own mount namespace); it is
// immutable after construction and shared by threads. start_sandbox() blocks until the
// program runs or a step failed; clone_sandbox() is the same for a caller that continues
// in the child itself (the python zygote).
#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace fnmesh::node {

struct read_only_file {
  std::filesystem::path host;
  std::string inside;              // absolute path in the sandbox
};

struct sandbox_host_options {
  std::filesystem::path staging;   // a directory of the node's: the common base root is made in it
  std::vector<read_only_file> files;  // copied into the base (the runtimes' shims)
  bool make_base = true;           // false: use the base another sandbox_host made (the zygote)
  uid_t outside_uid = 65534;       // what the sandbox's uid 1000 is on the host (nobody)
  gid_t outside_gid = 65534;
};

class sandbox_host {
 public:
  // Makes the base root every sandbox binds read-only as its / (<staging>/base: mount
  // points, the host's /bin and /lib* links, a few /etc files, /dev nodes, the runtime
  // files); throws with one clear line when it cannot.
  explicit sandbox_host(sandbox_host_options opts);

  const sandbox_host_options& options() const noexcept { return opts_; }
  const std::filesystem::path& base() const noexcept { return base_; }
  const std::vector<std::string>& root_dirs() const noexcept { return dirs_; }  // real dirs, bound read-only
  int last_capability() const noexcept { return last_cap_; }

 private:
  sandbox_host_options opts_;
  std::filesystem::path base_;
  std::vector<std::string> dirs_;
  int last_cap_ = 40;
};

struct sandbox_plan {
  std::filesystem::path code_dir;  // read-only at /var/task, the working directory
  int64_t tmp_bytes = int64_t(512) << 20;
  bool host_network = false;       // false: a private loopback only
  int network_namespace = -1;      // one made in advance (make_network_namespace) to join; -1: a new one
  int cgroup_v2_dir = -1;          // CLONE_INTO_CGROUP target; -1: the caller's cgroup
  std::vector<std::string> cgroup_v1_dirs;  // each one's cgroup.procs gets the pid before it runs
  int stdio[4] = {-1, -1, -1, -1}; // become the sandbox's fds 0..3
  std::string program;             // exec'd in the sandbox; empty: clone_sandbox returns 0 in the child
  std::vector<std::string> argv;
  std::vector<std::string> env;    // "NAME=value"
  const sock_fprog* seccomp = nullptr;
};

struct started_sandbox {
  pid_t pid = 0;
  unique_fd pidfd;
};

// A fresh network namespace with its loopback up, for a sandbox to join later: making
// one costs about as much as the rest of a sandbox, so the launcher keeps a few ready.
// Made in the calling thread's namespace, which it returns to.
result<unique_fd> make_network_namespace();

// What went wrong, naming the step ("bind /usr at /usr: Permission denied").
using sandbox_result = std::expected<started_sandbox, std::string>;

// Starts plan.program in a new sandbox. The child is the caller's child (reap it with
// wait4 or its pidfd).
sandbox_result start_sandbox(const sandbox_host& host, const sandbox_plan& plan);

// As start_sandbox, for a caller that runs on in the sandbox without exec: returns
// pid 0 in the child once it is set up (descriptors 0..3 in place, privileges dropped),
// the child's pid in the caller. `clone_flags_extra` is or-ed into clone3's flags
// (CLONE_PARENT: the zygote's children belong to the node).
sandbox_result clone_sandbox(const sandbox_host& host, const sandbox_plan& plan,
                             uint64_t clone_flags_extra);

}  // namespace fnmesh::node
