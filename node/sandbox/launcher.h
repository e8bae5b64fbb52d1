#pragma once
// launcher: starts sandboxes for the executor. A cold start takes a spare sandbox, made
// ahead of need by a zygote (namespaces, root, init: sandbox.h), writes its cgroup's
// limits (memory from the spec, CPU in proportion: 1769 MB = 1 vCPU, pids.max), makes the
// descriptors the node keeps (the fd 3 socket of warm runtimes, stdout/stderr pipes, stdin
// for exec) and assigns it its function: python3 goes on in the copy of the pre-initialised
// python zygote; nodejs, native and exec programs are exec'd. Under a net_guard each
// sandbox's traffic is counted and its network policy enforced from before its function
// runs; allow-list and host sandboxes share the host's network namespace, the others get
// one of their own (loopback only). Owns the node's cgroup tree,
// the sandbox host, the two zygotes (restarted if they die) and the spares. launch() and
// make_spares() are thread-safe: the executor calls them from its TBB arena.
#include <sys/types.h>

#include <atomic>
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

namespace fnmesh::node {

class cpu_meter;  // node/bpf/cpu_meter.h
class net_guard;  // node/bpf/net_guard.h

struct launcher_options {
  size_t spare_sandboxes = 2;                // kept ready per zygote in use (0: each cold start makes one)
  std::string node_id;                       // names the node's cgroup directories: fnmesh-<node_id>
  std::filesystem::path staging;             // an empty directory: sandbox roots are built on it
  std::filesystem::path zygote;              // fnmesh-zygote
  std::filesystem::path python_zygote;       // fnmesh-python-zygote
  std::filesystem::path python_shim_dir;     // node/runtimes/python
  std::filesystem::path python_proto_dir;    // generated fnmesh.proto package
  std::filesystem::path nodejs_shim;         // node/runtimes/nodejs/shim.js
  std::filesystem::path nodejs = "/usr/bin/node";
  cpu_meter* meter = nullptr;                // counts each sandbox's CPU from its birth, if set
  // Counts each sandbox's traffic and enforces its network policy, if set; without it a
  // function with an allow-list does not start (nothing would enforce the list).
  net_guard* net = nullptr;
};

struct launch_request {
  broker::function_ptr function;
  std::filesystem::path code_dir;            // bound read-only at /var/task
  std::vector<std::string> env;              // exec: the invocation's FNMESH_* variables
};

// A running sandbox and the node's ends of its descriptors (non-blocking).
struct launched_sandbox {
  pid_t pid = 0;
  unique_fd pidfd, sock, out, err, in;       // sock: warm runtimes; in: exec
  sandbox_cgroup cgroup;
  std::string name;                          // its cgroup directory's
  cpu_time cpu_at_start;                     // its cgroup's CPU time when it was assigned
  uint64_t cgroup_id = 0;                    // watched by the meter (0: no meter)
  int64_t meter_ns_at_start = 0;             // the meter's figure when it was assigned
  uint64_t net_id = 0;                       // its cgroup id, watched by the net guard (0: none)
};

class launcher {
 public:
  // Opens the cgroup tree, makes the base root and starts the zygotes; throws with one
  // clear line when the machine cannot make sandboxes (not root, no cgroups).
  explicit launcher(launcher_options opts);
  ~launcher();

  // What the cgroup tree found, for the start-up log.
  std::string describe() const;
  // The node's cgroup v2 directory, every sandbox's parent ("" without cgroup v2).
  std::string cgroup_v2_dir() const;
  // Sets launcher_options::net; call it before the first launch.
  void guard_network(net_guard* g) noexcept { opts_.net = g; }
  // Limits the function's sandboxes run under. A sandbox starts with at least
  // `start_cpus` (its runtime's start-up, as Lambda's init) until the executor lowers
  // its quota to these with sandbox_cgroup::set_cpus.
  static cgroup_limits limits_of(const proto::FunctionSpec& spec);
  static constexpr double start_cpus = 1.0;

  std::expected<launched_sandbox, std::string> launch(const launch_request& req);
  // Makes spares until `spare_sandboxes` wait for each zygote a launch has used; call it
  // off the critical path (after a launch), as the executor's arena does.
  void make_spares();

 private:
  class zygote;
  enum kind : size_t { plain, python, kinds };
  struct spare {
    pid_t pid = 0;
    unique_fd pidfd, control;
    sandbox_cgroup cgroup;
    std::string name;
    uint64_t cgroup_id = 0;  // watched by the meter
    uint64_t net_id = 0;     // watched by the net guard
  };

  std::expected<spare, std::string> make_spare(kind k, bool host_network);
  std::expected<spare, std::string> take_spare(kind k);
  void discard(spare& s);
  // Hands the spare's cgroup and the function's network policy to the net guard.
  std::expected<void, std::string> guard(spare& s, const proto::FunctionSpec& spec);

  launcher_options opts_;
  std::unique_ptr<cgroup_tree> cgroups_;
  sandbox_host host_;
  unique_fd dev_null_;
  std::unique_ptr<zygote> zygotes_[kinds];
  std::atomic<uint64_t> spares_made_{0};
  std::mutex spares_mutex_;
  std::vector<spare> spares_[kinds];
  size_t making_[kinds] = {};
  bool used_[kinds] = {};
};

}  // namespace fnmesh::node
