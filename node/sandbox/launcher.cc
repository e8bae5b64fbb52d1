#include "node/sandbox/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "flatbuffers/proto.h"

namespace fnmesh::node {
namespace {

namespace p = fnmesh::proto;

constexpr int64_t megabyte = int64_t(1) << 20;
constexpr double lambda_mb_per_vcpu = 1769.0;
constexpr int zygote_reply_timeout_ms = 10'000;
const std::string nodejs_shim_inside = "/opt/fnmesh/runtime/nodejs/shim.js";

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

bool set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

std::vector<std::string> words_of(std::string_view s) {
  std::vector<std::string> words;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t b = s.find_first_not_of(" \t", pos);
    if (b == std::string_view::npos) break;
    size_t e = s.find_first_of(" \t", b);
    if (e == std::string_view::npos) e = s.size();
    words.emplace_back(s.substr(b, e - b));
    pos = e;
  }
  return words;
}

// The sandbox's environment: defaults, the spec's variables, then the FNMESH_* names,
// which the spec cannot override.
std::vector<std::string> environment_of(const p::FunctionSpec& spec, const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  auto add = [&](std::string_view k, std::string_view v) {
    std::string s(k);
    s += '=';
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(s); });
    s += v;
    env.push_back(std::move(s));
  };
  add("PATH", "/usr/local/bin:/usr/bin:/bin");
  add("LANG", "C.UTF-8");
  add("HOME", "/tmp");
  if (auto* vars = spec.env())
    for (const auto* kv : *vars)
      if (kv && kv->key() && kv->key()->size() > 0) add(p::view(kv->key()), p::view(kv->value()));
  add("FNMESH_FUNCTION", p::view(spec.name()));
  add("FNMESH_TENANT", p::view(spec.tenant()));
  add("FNMESH_VERSION", p::view(spec.version()));
  add("FNMESH_HANDLER", p::view(spec.handler()));
  add("FNMESH_RUNTIME", p::EnumNameRuntime(spec.runtime()));
  add("FNMESH_MEMORY_MB", std::to_string(spec.memory_mb()));
  add("FNMESH_TIMEOUT_S", std::to_string(spec.timeout_s()));
  add("FNMESH_CODE_DIR", "/var/task");
  for (const auto& kv : extra) {
    auto eq = kv.find('=');
    if (eq != std::string::npos) add(std::string_view(kv).substr(0, eq), std::string_view(kv).substr(eq + 1));
  }
  return env;
}

seccomp_filter build_filter() {
  auto f = seccomp_filter::build();
  if (!f) throw std::runtime_error("cannot build the sandbox seccomp filter: " + f.error().message());
  return std::move(*f);
}

std::unique_ptr<cgroup_tree> open_cgroups(const std::string& node_id) {
  if (::geteuid() != 0)
    throw std::runtime_error("fnmesh-node makes sandboxes with namespaces and cgroups: run it as root");
  auto tree = cgroup_tree::open(node_id);
  if (!tree) throw std::runtime_error("cannot make the node's cgroups: " + tree.error().message());
  return std::move(*tree);
}

}  // namespace

launcher::launcher(launcher_options opts)
    : opts_(std::move(opts)),
      cgroups_(open_cgroups(opts_.node_id)),
      host_({.staging = opts_.staging, .files = {{opts_.nodejs_shim, nodejs_shim_inside}}}),
      seccomp_(build_filter()),
      dev_null_(::open("/dev/null", O_RDWR | O_CLOEXEC)) {
  if (!dev_null_) throw std::runtime_error(errno_text("open /dev/null"));
  if (!opts_.python_zygote.empty()) {
    std::lock_guard lock(zygote_mutex_);
    if (auto ok = start_zygote(); !ok) throw std::runtime_error(ok.error());
  }
  make_spare_networks();
}

void launcher::make_spare_networks() {
  for (;;) {
    {
      std::lock_guard lock(networks_mutex_);
      if (networks_.size() >= opts_.spare_networks) return;
    }
    auto made = make_network_namespace();
    if (!made) return;  // each sandbox makes its own then
    std::lock_guard lock(networks_mutex_);
    networks_.push_back(std::move(*made));
  }
}

unique_fd launcher::take_network() {
  std::lock_guard lock(networks_mutex_);
  if (networks_.empty()) return {};
  unique_fd fd = std::move(networks_.back());
  networks_.pop_back();
  return fd;
}

launcher::~launcher() {
  std::lock_guard lock(zygote_mutex_);
  stop_zygote();
}

std::string launcher::describe() const { return cgroups_->describe(); }

cgroup_limits launcher::limits_of(const p::FunctionSpec& spec) {
  return {.memory_bytes = int64_t(spec.memory_mb()) * megabyte,
          .cpus = spec.memory_mb() / lambda_mb_per_vcpu,
          .pids_max = spec.pids_max()};
}

std::expected<launched_sandbox, std::string> launcher::launch(const launch_request& req) {
  const auto& spec = req.function->spec();
  const bool warm = spec.runtime() != p::Runtime::exec;
  launched_sandbox s;
  auto limits = limits_of(spec);
  limits.cpus = std::max(limits.cpus, start_cpus);
  auto cg = cgroups_->create(req.name, limits);
  if (!cg) return std::unexpected("cannot make the sandbox's cgroup: " + cg.error().message());
  s.cgroup = std::move(*cg);

  // Descriptors: ours non-blocking, the sandbox's blocking; all close-on-exec.
  unique_fd child_sock, child_out, child_err, child_in;
  int fds[2];
  if (warm) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return std::unexpected(errno_text("socketpair"));
    s.sock.reset(fds[0]);
    child_sock.reset(fds[1]);
    set_nonblocking(s.sock.get());
  }
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::unexpected(errno_text("pipe2"));
  s.out.reset(fds[0]);
  child_out.reset(fds[1]);
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::unexpected(errno_text("pipe2"));
  s.err.reset(fds[0]);
  child_err.reset(fds[1]);
  if (!warm) {
    if (::pipe2(fds, O_CLOEXEC) != 0) return std::unexpected(errno_text("pipe2"));
    child_in.reset(fds[0]);
    s.in.reset(fds[1]);
    set_nonblocking(s.in.get());
    ::fcntl(s.in.get(), F_SETPIPE_SZ, 1 << 20);
    ::fcntl(s.out.get(), F_SETPIPE_SZ, 1 << 20);
  }
  set_nonblocking(s.out.get());
  set_nonblocking(s.err.get());
  const int stdio[4] = {warm ? dev_null_.get() : child_in.get(), child_out.get(), child_err.get(),
                        warm ? child_sock.get() : dev_null_.get()};
  const auto env = environment_of(spec, req.env);
  const bool host_network = spec.network() == p::NetworkPolicy::host;
  const unique_fd network = host_network ? unique_fd() : take_network();

  if (spec.runtime() == p::Runtime::python3) {
    auto pid = fork_python(req, s.cgroup, stdio, network.get(), env);
    if (!pid) return std::unexpected(pid.error());
    s.pid = *pid;
    s.pidfd.reset(int(::syscall(SYS_pidfd_open, s.pid, 0)));
    if (!s.pidfd) {
      std::string why = errno_text("pidfd_open");
      ::kill(s.pid, SIGKILL);
      ::waitpid(s.pid, nullptr, 0);
      return std::unexpected(why);
    }
    return s;
  }

  sandbox_plan plan;
  plan.code_dir = req.code_dir;
  plan.tmp_bytes = int64_t(spec.tmp_mb()) * megabyte;
  plan.host_network = host_network;
  plan.network_namespace = network.get();
  plan.cgroup_v2_dir = s.cgroup.v2_fd();
  plan.cgroup_v1_dirs = s.cgroup.v1_dirs();
  std::copy(std::begin(stdio), std::end(stdio), plan.stdio);
  plan.env = env;
  plan.seccomp = seccomp_.program();
  if (spec.runtime() == p::Runtime::nodejs) {
    plan.program = opts_.nodejs.string();
    // V8's heap stays inside the sandbox's memory, with room for the rest of the process.
    plan.argv = {"node", "--max-old-space-size=" + std::to_string(std::max<uint32_t>(64, spec.memory_mb() * 3 / 4)),
                 nodejs_shim_inside, std::string(p::view(spec.handler()))};
  } else {
    // native / exec: a program (relative to the code folder, or absolute) and its words.
    plan.argv = words_of(p::view(spec.handler()));
    if (plan.argv.empty()) return std::unexpected(std::string("the function has no handler program"));
    plan.program = plan.argv[0].starts_with('/') ? plan.argv[0] : "/var/task/" + plan.argv[0];
  }
  auto started = start_sandbox(host_, plan);
  if (!started) return std::unexpected("cannot start the sandbox: " + started.error());
  s.pid = started->pid;
  s.pidfd = std::move(started->pidfd);
  return s;
}

std::expected<pid_t, std::string> launcher::fork_python(const launch_request& req, const sandbox_cgroup& cgroup,
                                                        const int (&stdio)[4], int network,
                                                        const std::vector<std::string>& env) {
  const auto& spec = req.function->spec();
  flatbuffers::FlatBufferBuilder b(1024);
  std::vector<flatbuffers::Offset<flatbuffers::String>> v1, vars;
  for (const auto& d : cgroup.v1_dirs()) v1.push_back(b.CreateString(d));
  for (const auto& e : env) vars.push_back(b.CreateString(e));
  b.Finish(p::CreateZygoteRequest(b, b.CreateString(req.code_dir.string()), int64_t(spec.tmp_mb()) * megabyte,
                                  spec.network() == p::NetworkPolicy::host, b.CreateString(cgroup.v2_dir()),
                                  b.CreateVector(v1), b.CreateString(p::view(spec.handler())), b.CreateVector(vars)));

  std::lock_guard lock(zygote_mutex_);
  std::string last_error;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!zygote_) {
      if (auto ok = start_zygote(); !ok) return std::unexpected(ok.error());
    }
    // fds 0..3 of the sandbox, then the network namespace to join if there is one.
    const int fds[5] = {stdio[0], stdio[1], stdio[2], stdio[3], network};
    const size_t nfds = network >= 0 ? 5 : 4;
    iovec iov{b.GetBufferPointer(), b.GetSize()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 5)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    if (::sendmsg(zygote_.get(), &msg, MSG_NOSIGNAL) < 0) {
      last_error = errno_text("the python zygote went away");
      stop_zygote();
      continue;
    }
    pollfd pfd{zygote_.get(), POLLIN, 0};
    uint8_t reply[4096];
    ssize_t n = -1;
    if (::poll(&pfd, 1, zygote_reply_timeout_ms) == 1) n = ::recv(zygote_.get(), reply, sizeof reply, 0);
    const auto* r = n > 0 ? p::verified<p::ZygoteReply>(std::span<const uint8_t>(reply, size_t(n))) : nullptr;
    if (!r) {
      // A sandbox it may have started is the node's child: the executor never learns
      // its pid, and the cgroup kill at clean-up ends it.
      last_error = n == 0 ? "the python zygote exited" : "the python zygote did not answer";
      stop_zygote();
      continue;
    }
    if (r->pid() > 0) return pid_t(r->pid());
    return std::unexpected("cannot start the python sandbox: " + std::string(p::view(r->error())));
  }
  return std::unexpected(last_error);
}

std::expected<void, std::string> launcher::start_zygote() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return std::unexpected(errno_text("socketpair"));
  unique_fd ours(sv[0]), theirs(sv[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const std::string path = opts_.python_zygote.string();
  std::vector<std::string> args = {path, "--shim-dir", opts_.python_shim_dir.string(), "--proto-dir",
                                   opts_.python_proto_dir.string(), "--staging", opts_.staging.string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char lang[] = "LANG=C.UTF-8";
  char* envp[] = {lang, nullptr};
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, path.c_str(), &actions, &attr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return std::unexpected("cannot start " + path + ": " + std::strerror(rc));
  zygote_ = std::move(ours);
  zygote_pid_ = pid;
  return {};
}

void launcher::stop_zygote() {
  zygote_.reset();  // the zygote exits on EOF
  if (zygote_pid_ > 0) {
    ::kill(zygote_pid_, SIGKILL);
    ::waitpid(zygote_pid_, nullptr, 0);
  }
  zygote_pid_ = 0;
}

}  // namespace fnmesh::node
