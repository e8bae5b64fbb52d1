#pragma once
// cgroups: the node's cgroup tree and one cgroup per sandbox, on whatever the machine has.
// At start cgroup_tree reads /proc/self/mountinfo and /proc/self/cgroup: the cgroup2 mount
// (pure v2: /sys/fs/cgroup; hybrid: /sys/fs/cgroup/unified) and the v1 hierarchies that
// carry memory, cpu, pids (and cpuacct, for CPU usage). Each limit goes where its
// controller is: v1 if a hierarchy has it, else v2 if it can be enabled, else nowhere
// (describe() says so). Every sandbox gets a v2 directory (its identity: CLONE_INTO_CGROUP,
// BPF) and a directory in each v1 hierarchy used, all below the process's own cgroup:
//   <own>/fnmesh-<node_id>/<sandbox name>
// Pure v2 forbids processes in a cgroup whose children have controllers: when the node's
// own cgroup lacks them and the node is alone in it, open() moves the node into
// <own>/fnmesh-<node_id>.node and enables them (a leaf left behind for the next start).
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace fnmesh::node {

struct cpu_time {
  int64_t user_ns = 0;
  int64_t system_ns = 0;
};

struct cgroup_limits {
  int64_t memory_bytes = 0;  // <= 0: no limit; with a limit, no swap
  double cpus = 0;           // CFS quota in CPUs over a 100 ms period (>= 1 ms); <= 0: no limit
  uint32_t pids_max = 0;     // 0: no limit
};

enum class cgroup_controller { memory, cpu, pids };
enum class cgroup_version { none, v1, v2 };

// Where the process's own cgroups are, from the text of /proc/self/mountinfo and
// /proc/self/cgroup.
struct cgroup_layout {
  struct hierarchy {
    std::string dir;  // own cgroup's directory
    bool memory = false, cpu = false, pids = false, cpuacct = false;
  };
  std::string v2_dir;           // empty without a cgroup2 mount
  std::vector<hierarchy> v1;    // only hierarchies with memory, cpu, pids or cpuacct
};
cgroup_layout parse_cgroup_layout(std::string_view mountinfo, std::string_view self_cgroup);

// One sandbox's cgroup directories, limits written; per-invocation readers kept open (read
// with pread: no path lookups). Movable; the destructor kills what runs and tries to
// remove the directories once (call kill(), reap, then remove() to be sure). One thread
// at a time.
class sandbox_cgroup {
 public:
  sandbox_cgroup() = default;
  sandbox_cgroup(sandbox_cgroup&& o) noexcept;
  sandbox_cgroup& operator=(sandbox_cgroup&& o) noexcept;
  ~sandbox_cgroup();

  // The v2 directory (O_DIRECTORY) for clone3 CLONE_INTO_CGROUP; -1 without cgroup2.
  int v2_fd() const noexcept { return v2_.get(); }
  // Moves the process into each v1 directory (v2 membership comes from clone3).
  result<void> attach(pid_t pid);

  bool oom_killed() const;              // the OOM killer killed a process in it
  int64_t peak_memory_bytes() const;    // since creation or reset_peak(); 0 if unknown
  cpu_time cpu() const;                 // CPU time of everything that ran in it
  void reset_peak();                    // between warm invocations (v2: kernel >= 6.12)
  // Writes the limits (those > 0) where their controllers are.
  result<void> limit(const cgroup_limits& limits);
  // A new CPU quota (as cgroup_limits::cpus), where the cpu controller is.
  result<void> set_cpus(double cpus);

  void kill();                          // SIGKILL to every process in it
  size_t processes() const;
  // rmdir of every directory; EBUSY while processes remain (retry later). Gone is fine.
  result<void> remove();

  const std::string& v2_dir() const noexcept { return v2_dir_; }
  const std::vector<std::string>& v1_dirs() const noexcept { return v1_dirs_; }

 private:
  friend class cgroup_tree;
  void release() noexcept;

  std::string v2_dir_;
  std::vector<std::string> v1_dirs_;
  unique_fd v2_;
  unique_fd oom_;       // memory.oom_control (v1) or memory.events (v2)
  unique_fd peak_;      // memory.max_usage_in_bytes (v1) or memory.peak (v2)
  struct limit_dir {      // a directory with a controller that limits
    unique_fd fd;
    std::string dir;
    bool v2 = false, memory = false, cpu = false, pids = false;
  };
  std::vector<limit_dir> limits_;
  unique_fd cpu_user_;  // cpuacct.usage_user (v1, ns) or cpu.stat (v2, user_usec)
  unique_fd cpu_sys_;   // cpuacct.usage_sys (v1, ns); v2: none (cpu.stat has both)
  bool cpu_usec_ = false;
};

// The node's cgroup directories in every hierarchy used. create() only reads the tree and
// may be called from any thread; the destructor kills and removes the sandbox directories
// still below it, then its own.
class cgroup_tree {
 public:
  // Creates (or adopts) fnmesh-<node_id> in each hierarchy and removes a previous run's
  // sandbox directories, killing their processes. Fails (path in the log) when a directory
  // cannot be made.
  static result<std::unique_ptr<cgroup_tree>> open(std::string_view node_id);
  ~cgroup_tree();
  cgroup_tree(const cgroup_tree&) = delete;
  cgroup_tree& operator=(const cgroup_tree&) = delete;

  // One line for the start-up log, e.g. "cgroup v2 /sys/fs/cgroup/unified/fnmesh-n1
  // (no controllers); v1 memory, cpu, pids, cpuacct".
  std::string describe() const;
  cgroup_version version_of(cgroup_controller c) const;

  // Makes <tree>/<name> in each hierarchy and writes the limits (none: limit() later).
  result<sandbox_cgroup> create(std::string_view name, const cgroup_limits& limits) const;

  std::vector<std::string> dirs() const;  // the tree's own directories

 private:
  struct hierarchy {
    std::string dir;
    unique_fd fd;
    bool memory = false, cpu = false, pids = false, cpuacct = false;
  };
  cgroup_tree() = default;
  result<void> remove_leftovers() const;

  hierarchy v2_;                 // dir empty without cgroup2; flags: controllers enabled
  std::vector<hierarchy> v1_;
  std::string note_;             // why v2 controllers are missing, or that the node moved
};

}  // namespace fnmesh::node
