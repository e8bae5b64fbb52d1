#pragma once
// sandbox: makes sandboxes (DESIGN §5) in two steps, so that a cold start pays only the
// second. make_spare() (in a zygote, ahead of need): clone3 with new pid, mount, ipc, uts
// (and, under network policy none, net) namespaces straight into the sandbox's cgroup v2
// directory (CLONE_INTO_CGROUP); with the zygote's (root) credentials the child builds its
// root from the node's read-only base (the host's /bin, /lib* links, a minimal /etc and
// /dev), /usr read-only, an empty /var/task, a capped tmpfs /tmp and a new /proc, pivots
// into it and forks:
// pid 1 stays a minimal init that reaps and exits as the runtime did (a signal as 128 +
// its number); pid 2 waits for its function. assign() (the node, at a cold start): pid 2
// mounts the code read-only at /var/task (and resizes /tmp if asked), enters its own user
// namespace, which owns none of the others, and init maps its uid 1000 to the host's
// nobody and drops its own privileges; pid 2 drops every capability, sets no_new_privs
// and the seccomp filter, and execs the program (or the zygote's runtime serves).
//
// sandbox_host holds what is read once per node (the host's layout, the staging
// directory: every sandbox builds its root on it, each in its own mount namespace); it is
// immutable after construction and shared by threads.
#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
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

// ---- spare sandboxes: made ahead by a zygote, given their function when one starts ----

struct spare_plan {
  int64_t tmp_bytes = int64_t(512) << 20;  // /tmp's size (an assignment with another remounts it)
  bool host_network = false;       // false: a new network namespace, loopback only
  int cgroup_v2_dir = -1;          // CLONE_INTO_CGROUP target; -1: the caller's cgroup
  std::vector<std::string> cgroup_v1_dirs;  // each one's cgroup.procs gets the pid before it runs
  const sock_fprog* seccomp = nullptr;
  bool prefault = false;           // copy the zygote's writable pages in before waiting:
                                   // its runtime then starts without copy-on-write faults
};

// What a zygote's own runtime (python) serves when an assignment has no program.
struct runtime_assignment {
  std::string handler;
  std::vector<std::string> env;    // "NAME=value"
};

// A zygote whose runtime goes on in its sandboxes: hooks around clone3 in the zygote, and
// the runtime's entry in the sandbox (set up, privileges dropped; it never returns).
struct zygote_runtime {
  std::function<void()> before_clone, after_clone;
  std::function<void(runtime_assignment)> serve;
};

struct spare_sandbox {
  pid_t pid = 0;                   // its init (pid 1 inside)
  unique_fd control;               // the node's end: the assignment goes here
};

// What went wrong, naming the step ("bind /usr at /usr: Permission denied").
template <class T>
using sandbox_result = std::expected<T, std::string>;

// Called by a single-threaded zygote: clones a sandbox with everything but its function:
// its namespaces, cgroup, root (with an empty /var/task), and init. Returns once its
// runtime process waits on the control socket. Without CLONE_PARENT in `clone_flags_extra`
// the sandbox is the caller's child.
sandbox_result<spare_sandbox> make_spare(const sandbox_host& host, const spare_plan& plan,
                                         const zygote_runtime* runtime, uint64_t clone_flags_extra);

// The node's side: what a spare becomes.
struct assignment {
  std::filesystem::path code_dir;  // read-only at /var/task, the working directory
  int64_t tmp_bytes = int64_t(512) << 20;
  int stdio[4] = {-1, -1, -1, -1}; // become the sandbox's fds 0..3
  std::string program;             // exec'd; empty: the zygote's runtime serves `handler`
  std::vector<std::string> argv;
  std::vector<std::string> env;    // "NAME=value"
  std::string handler;
};

// Gives the spare its function: binds the code, mounts /tmp, enters the sandbox's user
// namespace (uid 1000 = the host's nobody), drops every privilege and runs the program.
// Blocks until it runs or a step failed.
sandbox_result<void> assign(int control, const assignment& a);

}  // namespace fnmesh::node
