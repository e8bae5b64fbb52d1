// Bytes in and out per watched cgroup v2 id, and the egress policy of each: connects and
// unconnected sends of IPv4 and IPv6 sockets are refused (EPERM) unless the policy allows
// the address, and an allow-list sandbox may not bind a port. See net_guard.h.
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "node/bpf/net.h"
#include "node/bpf/slots.bpf.h"

char LICENSE[] SEC("license") = "GPL";

FNMESH_SLOT_TABLE(struct net_slot)

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 16384);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct net_allow_key);
  __type(value, __u8);
} allowed SEC(".maps");

// The socket's cgroup (set when the socket was made), not the running task's: ingress
// runs in softirq.
static int count(struct __sk_buff *skb, bool in) {
  struct net_slot *u = slot(bpf_skb_cgroup_id(skb));
  if (u) __sync_fetch_and_add(in ? &u->rx_bytes : &u->tx_bytes, skb->len);
  return 1;
}

SEC("cgroup_skb/ingress")
int count_in(struct __sk_buff *skb) { return count(skb, true); }

SEC("cgroup_skb/egress")
int count_out(struct __sk_buff *skb) { return count(skb, false); }

static bool loopback(const __u32 a[4]) {
  if (a[0] || a[1]) return false;
  if (a[2] == 0) return a[3] == bpf_htonl(1);                                      // ::1
  return a[2] == bpf_htonl(0xffff) && (bpf_ntohl(a[3]) >> 24) == 127;              // 127.0.0.0/8
}

static bool listed(__u64 id, __u32 port, const __u32 a[4]) {
  struct net_allow_key k = {.prefixlen = 96 + 128, .port = port, .cgroup_id = id};
  k.address[0] = a[0];
  k.address[1] = a[1];
  k.address[2] = a[2];
  k.address[3] = a[3];
  if (bpf_map_lookup_elem(&allowed, &k)) return true;
  k.port = 0;
  return bpf_map_lookup_elem(&allowed, &k) != 0;
}

// 1: the connect or send goes ahead; 0: it fails with EPERM, counted.
static int decide(struct bpf_sock_addr *ctx, const __u32 a[4]) {
  __u64 id = bpf_get_current_cgroup_id();
  struct net_slot *u = slot(id);
  if (!u) return 1;
  __u32 port = bpf_ntohs((__u16)ctx->user_port);
  switch (u->policy) {
    case net_host: return 1;
    case net_loopback:
      if (loopback(a)) return 1;
      break;
    case net_allow_list:
      if (listed(id, port, a)) return 1;
      break;
  }
  __sync_fetch_and_add(&u->refused, 1);
  return 0;
}

static int decide4(struct bpf_sock_addr *ctx) {
  __u32 a[4] = {0, 0, bpf_htonl(0xffff), ctx->user_ip4};
  return decide(ctx, a);
}

static int decide6(struct bpf_sock_addr *ctx) {
  __u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
  return decide(ctx, a);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx) { return decide4(ctx); }

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx) { return decide6(ctx); }

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx) { return decide4(ctx); }

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx) { return decide6(ctx); }

// An allow-list sandbox is on the host's network: it may not take a port there, so it
// cannot serve what its list does not name (binding port 0, as a client may, is fine).
static int decide_bind(struct bpf_sock_addr *ctx) {
  struct net_slot *u = slot(bpf_get_current_cgroup_id());
  if (!u || u->policy != net_allow_list || ctx->user_port == 0) return 1;
  __sync_fetch_and_add(&u->refused, 1);
  return 0;
}

SEC("cgroup/bind4")
int bind4(struct bpf_sock_addr *ctx) { return decide_bind(ctx); }

SEC("cgroup/bind6")
int bind6(struct bpf_sock_addr *ctx) { return decide_bind(ctx); }
