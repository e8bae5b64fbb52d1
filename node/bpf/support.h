#pragma once
// What the BPF objects' loaders (cpu_meter, net_guard) share; built only with BPF.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <expected>
#include <system_error>
#include <unordered_map>

#include "common/result.h"

namespace fnmesh::node {

// Sends libbpf's messages, verifier logs included, to the "bpf" log at debug level (once).
void route_libbpf_log();

// A libbpf call failed with errno `e`: logged at debug level, mapped to a bpf_errc.
std::unexpected<std::error_code> fail_bpf(const char* what, int e);

// One slot per watched cgroup: a hash map the programs look the cgroup id up in
// (`slot_of`: cgroup id -> index) and an array of slots (BPF_F_MMAPABLE) mapped into this
// process (slots.bpf.h declares both in a program), so the node reads and writes a slot
// with loads and stores. A freed slot is taken again last: a program still adding to it as
// its cgroup goes adds to no slot in use.
// Threads: none of its own; its owner locks.
class slot_table {
 public:
  slot_table() = default;
  // Maps the array `slots_fd` of `count` slots of `slot_bytes` each.
  static result<slot_table> map(int slot_of_fd, int slots_fd, uint32_t count, size_t slot_bytes);
  slot_table(slot_table&& o) noexcept;
  slot_table& operator=(slot_table&& o) noexcept;
  ~slot_table();

  // The cgroup's slot, or nullptr when it is not watched.
  template <class Slot>
  Slot* find(uint64_t cgroup_id) const {
    auto it = index_.find(cgroup_id);
    return it == index_.end() ? nullptr : static_cast<Slot*>(at(it->second));
  }
  // Gives the cgroup a slot holding `initial`, then shows it to the programs (one bpf(2)
  // call). EEXIST if it has one, E2BIG when none is free.
  template <class Slot>
  result<void> take(uint64_t cgroup_id, const Slot& initial) {
    return take_bytes(cgroup_id, &initial);
  }
  // Hides the cgroup from the programs (one bpf(2) call) and frees its slot. ENOENT.
  result<void> release(uint64_t cgroup_id);

 private:
  void* at(uint32_t i) const { return static_cast<char*>(base_) + size_t(i) * slot_bytes_; }
  result<void> take_bytes(uint64_t cgroup_id, const void* initial);

  int slot_of_fd_ = -1;
  void* base_ = nullptr;
  size_t mapped_bytes_ = 0, slot_bytes_ = 0;
  std::unordered_map<uint64_t, uint32_t> index_;  // cgroup id -> slot
  std::deque<uint32_t> free_;                     // least recently freed first
};

}  // namespace fnmesh::node
