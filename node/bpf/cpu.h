#pragma once
// What cpu.bpf.c and cpu_meter.cc share: the map values and the ring-buffer event. The
// includer provides __u64 (vmlinux.h in BPF, <linux/types.h> in C++).

// One per watched cgroup; written by the BPF programs only (the node creates and deletes it).
struct cpu_usage {
  __u64 ns;         // on-CPU time of its tasks, counted at each switch-out and tick
  __u64 fired_gen;  // the budget generation whose kill event was sent
};

// One per armed cgroup; written by the node only.
struct cpu_budget {
  __u64 armed_at;  // cpu_usage.ns when armed
  __u64 kill_at;   // SIGKILL its tasks once cpu_usage.ns passes this
  __u64 gen;       // new for each arming: one event per arming
};

struct cpu_kill_event {
  __u64 cgroup_id;
  __u64 used_ns;  // CPU time since arming
};
