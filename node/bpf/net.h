#pragma once
// What net.bpf.c and net_guard.cc share: the map values and keys. The includer provides
// __u32 and __u64 (vmlinux.h in BPF, <linux/types.h> in C++).

// A cgroup's egress policy: the values of FunctionSpec's NetworkPolicy.
enum net_policy_kind { net_none = 0, net_loopback = 1, net_host = 2, net_allow_list = 3 };

// One per watched cgroup, in an array the node maps into its memory: it reads the
// counters with plain loads, no system call.
struct net_slot {
  __u64 rx_bytes;  // IP packets its sockets received, headers included (programs only)
  __u64 tx_bytes;  // and sent
  __u64 refused;   // connects and sends the policy refused (EPERM)
  __u32 policy;    // net_policy_kind (the node, before the cgroup is watched)
  __u32 pad;
};

// An allow-list entry of a cgroup: an LPM trie key. The address is IPv6 (IPv4 mapped into
// ::ffff:0:0/96); port 0 stands for every port. prefixlen counts the bits of port and
// cgroup_id (always all of them: 96) and those of the address that must match.
struct net_allow_key {
  __u32 prefixlen;
  __u32 port;        // host order
  __u64 cgroup_id;
  __u32 address[4];  // network order
};
