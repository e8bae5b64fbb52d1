// fnmesh-python-zygote: a python3 runtime initialised once (interpreter, shim.py, the
// generated fnmesh.proto package) that forks into new sandboxes, so a python cold start
// costs a fork and the sandbox's set-up instead of an interpreter start (DESIGN §5).
//
// Started by the node's launcher with a SOCK_SEQPACKET socket at fd 3. Each request is a
// ZygoteRequest with the sandbox's fds 0..3 (and a network namespace) as SCM_RIGHTS; the zygote forks with clone3
// (CLONE_PARENT: the sandbox is the node's child, which reaps it), answers a ZygoteReply
// with the pid or the error, and the child runs shim.serve_in_sandbox(handler, env). One
// thread; exits when the node closes the socket.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "node/sandbox/sandbox.h"
#include "node/sandbox/seccomp.h"

namespace {

namespace p = fnmesh::proto;
using fnmesh::unique_fd;
using namespace fnmesh::node;

constexpr int control_fd = 3;

struct received {
  std::vector<uint8_t> message;
  unique_fd fds[5];  // the sandbox's 0..3, then the network namespace to join (optional)
};

// The next request, or false when the node is gone.
bool receive(received& r) {
  r.message.resize(64 * 1024);
  iovec iov{r.message.data(), r.message.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 5)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = ::recvmsg(control_fd, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (n <= 0) return false;
  r.message.resize(size_t(n));
  for (auto& fd : r.fds) fd.reset();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (i < 5) r.fds[i].reset(fd);
      else ::close(fd);
    }
  }
  return true;
}

void reply(int32_t pid, const std::string& error) {
  flatbuffers::FlatBufferBuilder b(256);
  b.Finish(p::CreateZygoteReply(b, pid, b.CreateString(error)));
  ::send(control_fd, b.GetBufferPointer(), b.GetSize(), MSG_NOSIGNAL);
}

// In the sandbox: hands over to the shim, never returns.
[[noreturn]] void serve(PyObject* serve_in_sandbox, const p::ZygoteRequest& req) {
  PyObject* env = PyList_New(0);
  if (req.env())
    for (const auto* e : *req.env()) {
      PyObject* s = PyUnicode_DecodeUTF8(e->c_str(), Py_ssize_t(e->size()), "replace");
      PyList_Append(env, s);
      Py_DECREF(s);
    }
  std::string handler(p::view(req.handler()));
  PyObject* code = PyObject_CallFunction(serve_in_sandbox, "sO", handler.c_str(), env);
  int status = 0;
  if (!code) {
    PyErr_Print();
    status = 1;
  } else {
    status = int(PyLong_AsLong(code));
  }
  std::fflush(nullptr);
  ::_exit(status);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-python-zygote: forks pre-initialised python3 runtimes into new sandboxes (started by fnmesh-node)"};
  std::string shim_dir, proto_dir, staging;
  app.add_option("--shim-dir", shim_dir, "folder of shim.py")->required();
  app.add_option("--proto-dir", proto_dir, "folder of the generated fnmesh.proto package")->required();
  app.add_option("--staging", staging, "empty directory the sandbox roots are built on")->required();
  CLI11_PARSE(app, argc, argv);
  if (::fcntl(control_fd, F_GETFD) < 0) {
    std::fprintf(stderr, "fnmesh-python-zygote: no control socket at fd 3 (it is started by fnmesh-node)\n");
    return 2;
  }

  auto filter = seccomp_filter::build();
  if (!filter) {
    std::fprintf(stderr, "fnmesh-python-zygote: seccomp filter: %s\n", filter.error().message().c_str());
    return 1;
  }
  const sandbox_host host({.staging = staging, .make_base = false});

  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;
  config.write_bytecode = 0;
  config.user_site_directory = 0;
  config.buffered_stdio = 0;
  config.parse_argv = 0;
  PyStatus st = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(st)) Py_ExitStatusException(st);
  PyObject* sys_path = PySys_GetObject("path");
  for (const std::string& dir : {shim_dir, proto_dir}) {
    PyObject* s = PyUnicode_FromString(dir.c_str());
    PyList_Insert(sys_path, 0, s);
    Py_DECREF(s);
  }
  PyObject* shim = PyImport_ImportModule("shim");
  PyObject* serve_in_sandbox = shim ? PyObject_GetAttrString(shim, "serve_in_sandbox") : nullptr;
  if (!serve_in_sandbox) {
    PyErr_Print();
    return 1;
  }

  received r;
  while (receive(r)) {
    const auto* req = p::verified<p::ZygoteRequest>(r.message);
    if (!req || !r.fds[3]) {
      reply(0, "malformed request");
      continue;
    }
    sandbox_plan plan;
    plan.code_dir = std::string(p::view(req->code_dir()));
    plan.tmp_bytes = req->tmp_bytes();
    plan.host_network = req->host_network();
    plan.network_namespace = r.fds[4].get();
    unique_fd cgroup(::open(std::string(p::view(req->cgroup_v2_dir())).c_str(), O_DIRECTORY | O_CLOEXEC));
    plan.cgroup_v2_dir = cgroup.get();
    if (req->cgroup_v1_dirs())
      for (const auto* d : *req->cgroup_v1_dirs()) plan.cgroup_v1_dirs.emplace_back(p::view(d));
    for (int i = 0; i < 4; ++i) plan.stdio[i] = r.fds[i].get();
    plan.seccomp = filter->program();

    PyOS_BeforeFork();
    auto started = clone_sandbox(host, plan, CLONE_PARENT);
    if (started && started->pid == 0) {
      PyOS_AfterFork_Child();
      serve(serve_in_sandbox, *req);
    }
    PyOS_AfterFork_Parent();
    if (started) reply(started->pid, "");
    else reply(0, started.error());
  }
  return 0;
}
