#include "node/bpf/support.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string_view>
#include <utility>

#include "common/log.h"
#include "node/bpf/bpf.h"

namespace fnmesh::node {
namespace {

int print_libbpf(libbpf_print_level, const char* format, va_list args) noexcept {
  char text[1024];
  std::vsnprintf(text, sizeof text, format, args);
  std::string_view t(text);
  while (!t.empty() && t.back() == '\n') t.remove_suffix(1);
  logger("bpf")->debug("libbpf: {}", t);
  return 0;
}

}  // namespace

void route_libbpf_log() {
  static std::once_flag set;
  std::call_once(set, [] { libbpf_set_print(print_libbpf); });
}

std::unexpected<std::error_code> fail_bpf(const char* what, int e) {
  logger("bpf")->debug("{}: {}", what, std::strerror(e));
  return fail(e == EPERM || e == EACCES ? bpf_errc::not_permitted : bpf_errc::refused);
}

result<slot_table> slot_table::map(int slot_of_fd, int slots_fd, uint32_t count, size_t slot_bytes) {
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  slot_table t;
  t.slot_of_fd_ = slot_of_fd;
  t.slot_bytes_ = slot_bytes;
  t.mapped_bytes_ = (count * slot_bytes + page - 1) / page * page;
  void* base = ::mmap(nullptr, t.mapped_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, slots_fd, 0);
  if (base == MAP_FAILED) return fail_bpf("map the slots", errno);
  t.base_ = base;
  for (uint32_t i = 0; i < count; ++i) t.free_.push_back(i);
  return t;
}

slot_table::slot_table(slot_table&& o) noexcept { *this = std::move(o); }

slot_table& slot_table::operator=(slot_table&& o) noexcept {
  std::swap(slot_of_fd_, o.slot_of_fd_);
  std::swap(base_, o.base_);
  std::swap(mapped_bytes_, o.mapped_bytes_);
  std::swap(slot_bytes_, o.slot_bytes_);
  std::swap(index_, o.index_);
  std::swap(free_, o.free_);
  return *this;
}

slot_table::~slot_table() {
  if (base_) ::munmap(base_, mapped_bytes_);
}

result<void> slot_table::take_bytes(uint64_t cgroup_id, const void* initial) {
  if (index_.contains(cgroup_id)) return fail_errno(EEXIST);
  if (free_.empty()) return fail_errno(E2BIG);
  const uint32_t i = free_.front();
  std::memcpy(at(i), initial, slot_bytes_);
  if (int r = bpf_map_update_elem(slot_of_fd_, &cgroup_id, &i, BPF_NOEXIST); r != 0) return fail_errno(-r);
  free_.pop_front();
  index_.emplace(cgroup_id, i);
  return {};
}

result<void> slot_table::release(uint64_t cgroup_id) {
  auto it = index_.find(cgroup_id);
  if (it == index_.end()) return fail_errno(ENOENT);
  if (int r = bpf_map_delete_elem(slot_of_fd_, &cgroup_id); r != 0) return fail_errno(-r);
  free_.push_back(it->second);
  index_.erase(it);
  return {};
}

}  // namespace fnmesh::node
