#include "node/sandbox/zygote.h"

#include <fcntl.h>
#include <signal.h>
#include <linux/sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "node/sandbox/seccomp.h"

namespace fnmesh::node {
namespace {

namespace p = fnmesh::proto;

void reply(int32_t pid, const std::string& error, int control) {
  flatbuffers::FlatBufferBuilder b(256);
  b.Finish(p::CreateSpareReply(b, pid, b.CreateString(error)));
  iovec iov{b.GetBufferPointer(), b.GetSize()};
  alignas(cmsghdr) char cmsg[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (control >= 0) {
    msg.msg_control = cmsg;
    msg.msg_controllen = sizeof cmsg;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &control, sizeof control);
  }
  ::sendmsg(zygote_control_fd, &msg, MSG_NOSIGNAL);
}

// Default dispositions, which every spare inherits: a program exec'd or a runtime that
// goes on starts as a fresh process would.
void reset_signal_dispositions() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
}

}  // namespace

int serve_zygote(const zygote_options& opts) {
  if (::fcntl(zygote_control_fd, F_GETFD) < 0) {
    std::fprintf(stderr, "no control socket at fd 3: a zygote is started by fnmesh-node\n");
    return 2;
  }
  auto filter = seccomp_filter::build();
  if (!filter) {
    std::fprintf(stderr, "seccomp filter: %s\n", filter.error().message().c_str());
    return 1;
  }
  const sandbox_host host({.staging = opts.staging, .make_base = false});
  reset_signal_dispositions();
  std::vector<uint8_t> message(64 * 1024);
  for (;;) {
    ssize_t n;
    while ((n = ::recv(zygote_control_fd, message.data(), message.size(), 0)) < 0 && errno == EINTR) {
    }
    if (n <= 0) return 0;  // the node is gone
    const auto* req = p::verified<p::SpareRequest>(std::span<const uint8_t>(message.data(), size_t(n)));
    if (!req) {
      reply(0, "malformed request", -1);
      continue;
    }
    spare_plan plan{.host_network = req->host_network(), .seccomp = filter->program(), .prefault = opts.prefault};
    unique_fd cgroup(::open(std::string(p::view(req->cgroup_v2_dir())).c_str(), O_DIRECTORY | O_CLOEXEC));
    plan.cgroup_v2_dir = cgroup.get();
    if (req->cgroup_v1_dirs())
      for (const auto* d : *req->cgroup_v1_dirs()) plan.cgroup_v1_dirs.emplace_back(p::view(d));
    auto spare = make_spare(host, plan, opts.runtime, CLONE_PARENT);
    if (spare) reply(spare->pid, "", spare->control.get());
    else reply(0, spare.error(), -1);
  }
}

}  // namespace fnmesh::node
