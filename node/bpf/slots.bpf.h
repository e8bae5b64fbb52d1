#pragma once
// The BPF side of support.h's slot table, for a program that keeps a `slot_type` per
// watched cgroup: the maps `slot_of` (cgroup v2 id -> index) and `slots` (the array the
// node maps into its memory; both sized by the loader), and slot(id), that cgroup's slot or
// 0 when it is not watched.
#define FNMESH_SLOT_TABLE(slot_type)                                    \
  struct {                                                              \
    __uint(type, BPF_MAP_TYPE_HASH);                                    \
    __uint(max_entries, 4096);                                          \
    __type(key, __u64);                                                 \
    __type(value, __u32);                                               \
  } slot_of SEC(".maps");                                               \
                                                                        \
  struct {                                                              \
    __uint(type, BPF_MAP_TYPE_ARRAY);                                   \
    __uint(map_flags, BPF_F_MMAPABLE);                                  \
    __uint(max_entries, 4096);                                          \
    __type(key, __u32);                                                 \
    __type(value, slot_type);                                           \
  } slots SEC(".maps");                                                 \
                                                                        \
  static slot_type *slot(__u64 id) {                                    \
    __u32 *i = bpf_map_lookup_elem(&slot_of, &id);                      \
    return i ? bpf_map_lookup_elem(&slots, i) : 0;                      \
  }
