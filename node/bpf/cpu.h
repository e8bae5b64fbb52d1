#pragma once
// What cpu.bpf.c and cpu_meter.cc share: the slot of a watched cgroup and the ring-buffer
// event. The includer provides __u64 (vmlinux.h in BPF, <linux/types.h> in C++).

// One per watched cgroup, in an array the node maps into its memory: the node reads the
// counter and arms budgets with plain loads and stores, no system call.
struct cpu_slot {
  // Written by the BPF programs only.
  __u64 ns;         // on-CPU time of its tasks, counted at each switch-out and tick
  __u64 fired_gen;  // the budget generation whose kill event was sent
  // Written by the node only; kill_at last when arming, first when disarming.
  __u64 armed_at;  // ns when armed
  __u64 gen;       // new for each arming: one event per arming
  __u64 kill_at;   // SIGKILL its tasks once ns passes this; 0: not armed
  __u64 pad[3];    // one cache line per slot
};

struct cpu_kill_event {
  __u64 cgroup_id;
  __u64 used_ns;  // CPU time since arming
};
