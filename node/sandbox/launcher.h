#pragma once
// launcher: starts sandboxes for the executor. For each one: a cgroup with the function's
// limits (memory from the spec, CPU in proportion: 1769 MB = 1 vCPU, pids.max), the
// descriptors the node keeps (the fd 3 socket of warm runtimes, stdout/stderr pipes, stdin
// for exec), and the sandbox itself: python3 forked from the pre-initialised zygote,
// nodejs, native and exec programs exec'd directly. Owns the node's cgroup tree, the
// sandbox host, the seccomp filter and the zygote (started on first use, restarted if it
// dies). launch() is thread-safe: the executor calls it from its TBB arena.
#include <sys/types.h>

#include <expected>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "broker/client/function_registry.h"
#include "common/unique_fd.h"
#include "node/sandbox/cgroups.h"
#include "node/sandbox/sandbox.h"
#include "node/sandbox/seccomp.h"

namespace fnmesh::node {

struct launcher_options {
  size_t spare_networks = 4;                 // network namespaces made ahead (0: each sandbox makes its own)
  std::string node_id;                       // names the node's cgroup directories: fnmesh-<node_id>
  std::filesystem::path staging;             // an empty directory: sandbox roots are built on it
  std::filesystem::path python_zygote;       // fnmesh-python-zygote
  std::filesystem::path python_shim_dir;     // node/runtimes/python
  std::filesystem::path python_proto_dir;    // generated fnmesh.proto package
  std::filesystem::path nodejs_shim;         // node/runtimes/nodejs/shim.js
  std::filesystem::path nodejs = "/usr/bin/node";
};

struct launch_request {
  broker::function_ptr function;
  std::filesystem::path code_dir;            // bound read-only at /var/task
  std::string name;                          // the sandbox's cgroup directory name
  std::vector<std::string> env;              // exec: the invocation's FNMESH_* variables
};

// A running sandbox and the node's ends of its descriptors (non-blocking).
struct launched_sandbox {
  pid_t pid = 0;
  unique_fd pidfd, sock, out, err, in;       // sock: warm runtimes; in: exec
  sandbox_cgroup cgroup;
};

class launcher {
 public:
  // Opens the cgroup tree and builds the seccomp filter; throws with one clear line when
  // the machine cannot make sandboxes (not root, no cgroups).
  explicit launcher(launcher_options opts);
  ~launcher();

  // What the cgroup tree found, for the start-up log.
  std::string describe() const;
  // Limits the function's sandboxes run under. A sandbox starts with at least
  // `start_cpus` (its runtime's start-up, as Lambda's init) until the executor lowers
  // its quota to these with sandbox_cgroup::set_cpus.
  static cgroup_limits limits_of(const proto::FunctionSpec& spec);
  static constexpr double start_cpus = 1.0;

  std::expected<launched_sandbox, std::string> launch(const launch_request& req);
  // Makes network namespaces until `spare_networks` are ready; call it off the critical
  // path (after a launch), as the executor's arena does.
  void make_spare_networks();

 private:
  std::expected<pid_t, std::string> fork_python(const launch_request& req, const sandbox_cgroup& cgroup,
                                                const int (&stdio)[4], int network,
                                                const std::vector<std::string>& env);
  unique_fd take_network();
  std::expected<void, std::string> start_zygote();  // zygote_mutex_ held
  void stop_zygote();                                // zygote_mutex_ held

  launcher_options opts_;
  std::unique_ptr<cgroup_tree> cgroups_;
  sandbox_host host_;
  seccomp_filter seccomp_;
  unique_fd dev_null_;
  std::mutex networks_mutex_;
  std::vector<unique_fd> networks_;          // fresh network namespaces, loopback up
  std::mutex zygote_mutex_;
  unique_fd zygote_;                         // SOCK_SEQPACKET to the zygote
  pid_t zygote_pid_ = 0;
};

}  // namespace fnmesh::node
