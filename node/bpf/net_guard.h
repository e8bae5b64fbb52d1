#pragma once
// net_guard: bytes in and out per sandbox counted in the kernel, and each sandbox's egress
// policy enforced there (DESIGN §6). It owns the BPF programs of net.bpf.c, loaded and
// attached once (BPF links, in multi mode) to the node's cgroup v2 directory, so they run
// for every socket of every sandbox below it: cgroup_skb ingress and egress add each IP
// packet's length (headers included; a segmentation offload packet counts once) to its
// socket's cgroup, and cgroup/connect4|6 and sendmsg4|6 (unconnected UDP) refuse with
// EPERM, and count, what the cgroup's policy does not allow:
//   none        every connect and every send with an address
//   loopback    all but 127.0.0.0/8 and ::1 (in the sandbox's own network namespace)
//   allow_list  all but its entries (network and port, common/allow_entry.h); and, as it
//               is on the host's network, every bind to a port (cgroup/bind4|6)
//   host        nothing
// Sandboxes are keyed by their cgroup v2 id (cgroup_id() of bpf.h). A socket
// belongs to the cgroup of the task that made it. Unwatched cgroups are neither counted nor
// refused. The links go when the guard does (or the node dies).
//
// Each watched cgroup has a slot in an array this process maps into its memory: reading
// its counters is loads, no system call; watch() and unwatch() are one bpf(2) call each,
// and one more per allow-list entry.
//
// Threads: every member may be called from any thread.
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/allow_entry.h"
#include "common/result.h"
#include "flatbuffers/proto.h"
#include "node/bpf/bpf.h"
#include "node/bpf/support.h"

struct net_bpf;

namespace fnmesh::node {

// What a watched cgroup's sockets did since watch().
struct net_traffic {
  int64_t rx_bytes = 0;
  int64_t tx_bytes = 0;
  int64_t refused = 0;  // connects and sends refused by its policy
};

class net_guard {
 public:
  struct options {
    std::string cgroup_dir;                      // a cgroup v2 directory: the programs guard all below it
    uint32_t max_cgroups = 4096;                 // watched at once
    uint32_t max_allow_entries = 16 * 1024;      // allow-list entries of all of them
  };

  // Loads the programs and attaches them to o.cgroup_dir. Fails with a bpf_errc, or
  // ENOTDIR when the directory is not cgroup v2.
  static result<std::unique_ptr<net_guard>> open(const options& o);
  ~net_guard();
  net_guard(const net_guard&) = delete;
  net_guard& operator=(const net_guard&) = delete;

  // Counts a cgroup's traffic from 0 and enforces `policy` (with `allow` under
  // allow_list) on its sockets (EEXIST if watched; E2BIG past the maps' sizes).
  result<void> watch(uint64_t cgroup_id, proto::NetworkPolicy policy, std::span<const allow_entry> allow = {});
  // Stops counting and enforcing (ENOENT if not watched).
  result<void> unwatch(uint64_t cgroup_id);
  // Its counters since watch() (ENOENT if not watched).
  result<net_traffic> traffic(uint64_t cgroup_id) const;

 private:
  struct skeleton_deleter {
    void operator()(net_bpf* s) const noexcept;
  };
  net_guard() = default;
  void forget(uint64_t cgroup_id, const std::vector<allow_entry>& allow);  // from the trie

  std::unique_ptr<net_bpf, skeleton_deleter> skel_;
  int allowed_fd_ = -1;
  mutable std::mutex mutex_;
  slot_table slots_;  // of struct net_slot (net.h)
  std::unordered_map<uint64_t, std::vector<allow_entry>> allowed_;  // what watch() put in the trie
};

}  // namespace fnmesh::node
