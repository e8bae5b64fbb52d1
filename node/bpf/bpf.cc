#include "node/bpf/bpf.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <string>

namespace fnmesh::node {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "bpf"; }
  std::string message(int v) const override {
    switch (static_cast<bpf_errc>(v)) {
      case bpf_errc::no_btf: return "BPF unavailable: the kernel has no BTF (/sys/kernel/btf/vmlinux)";
      case bpf_errc::not_permitted: return "BPF unavailable: needs CAP_BPF and CAP_PERFMON (or root)";
      case bpf_errc::refused:
        return "BPF unavailable: the kernel refused a program (libbpf's reason in the debug log)";
      case bpf_errc::not_built: return "BPF unavailable: built without it (FNMESH_BPF=OFF)";
    }
    return "unknown bpf error " + std::to_string(v);
  }
};

}  // namespace

const std::error_category& bpf_category() noexcept {
  static const category instance;
  return instance;
}

result<uint64_t> cgroup_id(int dir_fd) {
  struct statfs fs {};
  struct stat st {};
  if (::fstatfs(dir_fd, &fs) != 0 || ::fstat(dir_fd, &st) != 0) return fail_errno(errno);
  if (fs.f_type != CGROUP2_SUPER_MAGIC || !S_ISDIR(st.st_mode)) return fail_errno(ENOTDIR);
  return static_cast<uint64_t>(st.st_ino);
}

}  // namespace fnmesh::node
