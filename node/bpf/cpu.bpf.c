// CPU time per watched cgroup v2 id, from the scheduler's own sum_exec_runtime, and CPU
// budgets enforced in the kernel with SIGKILL. See cpu_meter.h.
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "node/bpf/cpu.h"
#include "node/bpf/slots.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define SIGKILL 9
#define READ_ONCE(x) (*(const volatile typeof(x) *)&(x))

// Tunables, set before load.
const volatile bool debug = false;  // bpf_printk each kill (trace_pipe)

FNMESH_SLOT_TABLE(struct cpu_slot)

// The task's sum_exec_runtime when last counted; a task born in a watched cgroup starts at 0.
struct {
  __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, __u64);
} counted SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 64 * 1024);
} kills SEC(".maps");

// Adds what `task` (current, in cgroup `cgid`) ran since it was last counted; then, past an
// armed budget, kills it and sends the arming's one event.
static void account(struct task_struct *task, __u64 cgid) {
  struct cpu_slot *s = slot(cgid);
  if (!s) return;
  __u64 *last = bpf_task_storage_get(&counted, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
  if (!last) return;
  __u64 now = task->se.sum_exec_runtime;
  __u64 total = __sync_add_and_fetch(&s->ns, now - *last);
  *last = now;

  __u64 kill_at = READ_ONCE(s->kill_at);
  if (!kill_at || total < kill_at) return;
  bpf_send_signal(SIGKILL);
  if (debug) bpf_printk("cpu budget: SIGKILL to pid %d of cgroup %llu", task->pid, cgid);
  __u64 fired = s->fired_gen, gen = READ_ONCE(s->gen);
  if (fired == gen || __sync_val_compare_and_swap(&s->fired_gen, fired, gen) != fired) return;
  struct cpu_kill_event *e = bpf_ringbuf_reserve(&kills, sizeof(*e), 0);
  if (!e) return;
  e->cgroup_id = cgid;
  e->used_ns = total - READ_ONCE(s->armed_at);
  bpf_ringbuf_submit(e, 0);
}

// At a switch the outgoing task is still current; a dead task's last switch counts its end.
SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev) {
  account(prev, bpf_get_current_cgroup_id());
  return 0;
}

// After every hrtimer on every CPU, the scheduler tick among them (the tick has just
// updated the running task's sum_exec_runtime): a task that is never switched out is still
// counted and stopped within a tick of its budget, at no extra interrupt.
SEC("tp_btf/hrtimer_expire_exit")
int BPF_PROG(on_timer) {
  account(bpf_get_current_task_btf(), bpf_get_current_cgroup_id());
  return 0;
}
