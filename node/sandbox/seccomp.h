#pragma once
// seccomp_filter: the system-call filter every sandbox runs under. What: calls that reach past
// the sandbox (mounts, namespaces, tracing, BPF/perf, kexec, modules, keyrings, host settings)
// fail with EPERM, clone3 with ENOSYS (glibc then uses clone, whose flags are checked), and a
// foreign ABI (x32, i386) is killed; everything else is allowed. Why: inside its user namespace
// a sandbox holds every capability, and these are the calls that would use them against the
// kernel or to escape; EPERM, not a kill, so that a function sees a clear error.
//
// Built once at node start with libseccomp and kept as a classic BPF program; immutable after
// build(), so any thread may use it, and install() neither allocates nor takes a lock, so a
// CLONE_VM child may call it right before execve.
#include <linux/filter.h>

#include <vector>

#include "common/result.h"

namespace fnmesh::node {

class seccomp_filter {
 public:
  static result<seccomp_filter> build();

  seccomp_filter(seccomp_filter&& o) noexcept;
  seccomp_filter& operator=(seccomp_filter&& o) noexcept;
  seccomp_filter(const seccomp_filter&) = delete;
  seccomp_filter& operator=(const seccomp_filter&) = delete;

  // The program for prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, program()).
  const sock_fprog* program() const noexcept { return &prog_; }

  // Sets no_new_privs and installs the filter in the calling thread: 0, or the errno.
  int install() const noexcept;

 private:
  explicit seccomp_filter(std::vector<sock_filter> code) noexcept;

  std::vector<sock_filter> code_;
  sock_fprog prog_{};  // points into code_
};

}  // namespace fnmesh::node
