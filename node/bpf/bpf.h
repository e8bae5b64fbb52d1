#pragma once
// What every user of node/bpf shares, built with or without BPF: why a BPF object is not
// there, and the id by which the programs know a sandbox's cgroup.
#include <cstdint>
#include <system_error>

#include "common/result.h"

namespace fnmesh::node {

enum class bpf_errc {
  no_btf = 1,     // the kernel has no BTF (/sys/kernel/btf/vmlinux)
  not_permitted,  // needs CAP_BPF and CAP_PERFMON (or root)
  refused,        // the kernel refused a program or an attachment (libbpf's reason: "bpf" log, debug)
  not_built,      // built with FNMESH_BPF=OFF
};
const std::error_category& bpf_category() noexcept;
inline std::error_code make_error_code(bpf_errc e) noexcept { return {static_cast<int>(e), bpf_category()}; }

// The id BPF sees for the cgroup v2 directory `dir_fd` (bpf_get_current_cgroup_id()).
result<uint64_t> cgroup_id(int dir_fd);

}  // namespace fnmesh::node

template <>
struct std::is_error_code_enum<fnmesh::node::bpf_errc> : std::true_type {};
