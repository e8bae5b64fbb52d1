#include "node/sandbox/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <linux/magic.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/allow_entry.h"
#include "flatbuffers/proto.h"
#include "node/bpf/cpu_meter.h"
#include "node/bpf/net_guard.h"

namespace fnmesh::node {
namespace {

namespace p = fnmesh::proto;

constexpr int64_t megabyte = int64_t(1) << 20;
constexpr double lambda_mb_per_vcpu = 1769.0;
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

std::unique_ptr<cgroup_tree> open_cgroups(const std::string& node_id) {
  if (::geteuid() != 0)
    throw std::runtime_error("fnmesh-node makes sandboxes with namespaces and cgroups: run it as root");
  auto tree = cgroup_tree::open(node_id);
  if (!tree) throw std::runtime_error("cannot make the node's cgroups: " + tree.error().message());
  return std::move(*tree);
}

}  // namespace

// One zygote process and the socket to it; started again when it died.
class launcher::zygote {
 public:
  zygote(std::filesystem::path path, std::vector<std::string> args) : path_(std::move(path)), args_(std::move(args)) {
    std::lock_guard lock(mutex_);
    if (auto ok = start(); !ok) throw std::runtime_error(ok.error());
  }
  ~zygote() {
    std::lock_guard lock(mutex_);
    stop();
  }

  struct made {
    pid_t pid;
    unique_fd control;
  };

  // A spare sandbox (the node's child) in the cgroup `cg`.
  std::expected<made, std::string> make(const sandbox_cgroup& cg, bool host_network) {
    flatbuffers::FlatBufferBuilder b(512);
    std::vector<flatbuffers::Offset<flatbuffers::String>> v1;
    for (const auto& d : cg.v1_dirs()) v1.push_back(b.CreateString(d));
    b.Finish(p::CreateSpareRequest(b, host_network, b.CreateString(cg.v2_dir()), b.CreateVector(v1)));
    std::lock_guard lock(mutex_);
    std::string last_error;
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!sock_) {
        if (auto ok = start(); !ok) return std::unexpected(ok.error());
      }
      if (::send(sock_.get(), b.GetBufferPointer(), b.GetSize(), MSG_NOSIGNAL) < 0) {
        last_error = errno_text((path_.filename().string() + " went away").c_str());
        stop();
        continue;
      }
      uint8_t reply[4096];
      iovec iov{reply, sizeof reply};
      alignas(cmsghdr) char cmsg[CMSG_SPACE(sizeof(int))] = {};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = cmsg;
      msg.msg_controllen = sizeof cmsg;
      pollfd pfd{sock_.get(), POLLIN, 0};
      ssize_t n = -1;
      if (::poll(&pfd, 1, reply_timeout_ms) == 1) n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC);
      unique_fd control;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n > 0 && c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
          control.reset(fd);
        }
      const auto* r = n > 0 ? p::verified<p::SpareReply>(std::span<const uint8_t>(reply, size_t(n))) : nullptr;
      if (!r) {
        // A spare it may have made is the node's child: the cgroup's kill ends it.
        last_error = path_.filename().string() + (n == 0 ? " exited" : " did not answer");
        stop();
        continue;
      }
      if (r->pid() > 0 && control) return made{pid_t(r->pid()), std::move(control)};
      return std::unexpected("cannot make a sandbox: " + std::string(p::view(r->error())));
    }
    return std::unexpected(last_error);
  }

 private:
  static constexpr int reply_timeout_ms = 10'000;

  std::expected<void, std::string> start() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      return std::unexpected(errno_text("socketpair"));
    unique_fd ours(sv[0]), theirs(sv[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, theirs.get(), zygote_fd);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<std::string> args = args_;
    args.insert(args.begin(), path_.string());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    char lang[] = "LANG=C.UTF-8";
    char* envp[] = {lang, nullptr};
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, path_.c_str(), &actions, &attr, argv.data(), envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return std::unexpected("cannot start " + path_.string() + ": " + std::strerror(rc));
    sock_ = std::move(ours);
    pid_ = pid;
    return {};
  }

  void stop() {
    sock_.reset();  // a zygote exits on EOF
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = 0;
  }

  static constexpr int zygote_fd = 3;
  const std::filesystem::path path_;
  const std::vector<std::string> args_;
  std::mutex mutex_;
  unique_fd sock_;  // SOCK_SEQPACKET
  pid_t pid_ = 0;
};

launcher::launcher(launcher_options opts)
    : opts_(std::move(opts)),
      cgroups_(open_cgroups(opts_.node_id)),
      host_({.staging = opts_.staging, .files = {{opts_.nodejs_shim, nodejs_shim_inside}}}),
      dev_null_(::open("/dev/null", O_RDWR | O_CLOEXEC)) {
  if (!dev_null_) throw std::runtime_error(errno_text("open /dev/null"));
  zygotes_[plain] = std::make_unique<zygote>(opts_.zygote, std::vector<std::string>{"--staging", opts_.staging.string()});
  if (!opts_.python_zygote.empty())
    zygotes_[python] = std::make_unique<zygote>(
        opts_.python_zygote,
        std::vector<std::string>{"--shim-dir", opts_.python_shim_dir.string(), "--proto-dir",
                                 opts_.python_proto_dir.string(), "--staging", opts_.staging.string()});
}

launcher::~launcher() {
  std::lock_guard lock(spares_mutex_);
  for (auto& pool : spares_)
    for (auto& s : pool) discard(s);
}

std::string launcher::describe() const { return cgroups_->describe(); }

std::string launcher::cgroup_v2_dir() const {
  const auto dirs = cgroups_->dirs();  // the v2 one first, where there is one
  struct statfs fs {};
  if (dirs.empty() || ::statfs(dirs.front().c_str(), &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC) return {};
  return dirs.front();
}

cgroup_limits launcher::limits_of(const p::FunctionSpec& spec) {
  return {.memory_bytes = int64_t(spec.memory_mb()) * megabyte,
          .cpus = spec.memory_mb() / lambda_mb_per_vcpu,
          .pids_max = spec.pids_max()};
}

std::expected<launcher::spare, std::string> launcher::make_spare(kind k, bool host_network) {
  if (!zygotes_[k]) return std::unexpected(std::string("no python zygote configured"));
  spare s;
  s.name = "sbx-" + std::to_string(++spares_made_);
  auto cg = cgroups_->create(s.name, {});
  if (!cg) return std::unexpected("cannot make the sandbox's cgroup: " + cg.error().message());
  s.cgroup = std::move(*cg);
  // Watched before its first task is born: the meter counts every task from its birth.
  if (opts_.meter) {
    auto id = cgroup_id(s.cgroup.v2_fd());
    if (id && opts_.meter->watch(*id)) s.cgroup_id = *id;
  }
  auto made = zygotes_[k]->make(s.cgroup, host_network);
  if (!made) return std::unexpected(made.error());
  s.pid = made->pid;
  s.control = std::move(made->control);
  s.pidfd.reset(int(::syscall(SYS_pidfd_open, s.pid, 0)));
  if (!s.pidfd) {
    std::string why = errno_text("pidfd_open");
    discard(s);
    return std::unexpected(why);
  }
  return s;
}

std::expected<launcher::spare, std::string> launcher::take_spare(kind k) {
  {
    std::lock_guard lock(spares_mutex_);
    used_[k] = true;
    if (!spares_[k].empty()) {
      spare s = std::move(spares_[k].back());
      spares_[k].pop_back();
      return s;
    }
  }
  return make_spare(k, false);
}

void launcher::discard(spare& s) {
  s.cgroup.kill();
  if (s.pid > 0) ::waitpid(s.pid, nullptr, 0);
  s.pid = 0;
  (void)s.cgroup.remove();
  if (s.cgroup_id) (void)opts_.meter->unwatch(std::exchange(s.cgroup_id, 0));
  if (s.net_id) (void)opts_.net->unwatch(std::exchange(s.net_id, 0));
}

std::expected<void, std::string> launcher::guard(spare& s, const p::FunctionSpec& spec) {
  std::vector<allow_entry> allow;
  if (spec.network() == p::NetworkPolicy::allow_list && spec.allow()) {
    if (spec.allow()->size() > max_allow_entries)
      return std::unexpected("the function's network allow-list has more than " + std::to_string(max_allow_entries) +
                             " entries");
    for (const auto* text : *spec.allow()) {
      auto e = parse_allow_entry(p::view(text));
      if (!e) return std::unexpected("the function's network allow-list: " + std::string(p::view(text)) + ": " + e.error());
      allow.push_back(*e);
    }
  }
  auto id = cgroup_id(s.cgroup.v2_fd());
  if (!id) return std::unexpected("cannot guard the sandbox's network: " + id.error().message());
  if (auto ok = opts_.net->watch(*id, spec.network(), allow); !ok)
    return std::unexpected("cannot guard the sandbox's network: " + ok.error().message());
  s.net_id = *id;
  return {};
}

void launcher::make_spares() {
  for (size_t k = 0; k < kinds; ++k) {
    for (;;) {
      {
        std::lock_guard lock(spares_mutex_);
        if (!used_[k] || spares_[k].size() + making_[k] >= opts_.spare_sandboxes) break;
        ++making_[k];
      }
      auto s = make_spare(kind(k), false);
      std::lock_guard lock(spares_mutex_);
      --making_[k];
      if (!s) break;  // the next launch makes its own and says why
      spares_[k].push_back(std::move(*s));
    }
  }
}

std::expected<launched_sandbox, std::string> launcher::launch(const launch_request& req) {
  const auto& spec = req.function->spec();
  const bool warm = spec.runtime() != p::Runtime::exec;
  const bool allow_list = spec.network() == p::NetworkPolicy::allow_list;
  if (allow_list && !opts_.net)
    return std::unexpected(std::string(
        "the function's network allow-list cannot be enforced on this node (BPF is off or does not load here), "
        "so it does not run here"));
  const bool host_network = allow_list || spec.network() == p::NetworkPolicy::host;
  const kind k = spec.runtime() == p::Runtime::python3 ? python : plain;
  auto taken = host_network ? make_spare(k, true) : take_spare(k);
  if (!taken) return std::unexpected(taken.error());
  spare& sp = *taken;
  auto fail = [&](std::string why) -> std::expected<launched_sandbox, std::string> {
    discard(sp);
    return std::unexpected(std::move(why));
  };
  auto limits = limits_of(spec);
  limits.cpus = std::max(limits.cpus, start_cpus);
  if (auto ok = sp.cgroup.limit(limits); !ok) return fail("cannot limit the sandbox's cgroup: " + ok.error().message());
  if (opts_.net)
    if (auto ok = guard(sp, spec); !ok) return fail(ok.error());

  // Descriptors: ours non-blocking, the sandbox's blocking; all close-on-exec.
  launched_sandbox s;
  unique_fd child_sock, child_out, child_err, child_in;
  int fds[2];
  if (warm) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return fail(errno_text("socketpair"));
    s.sock.reset(fds[0]);
    child_sock.reset(fds[1]);
    set_nonblocking(s.sock.get());
  }
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail(errno_text("pipe2"));
  s.out.reset(fds[0]);
  child_out.reset(fds[1]);
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail(errno_text("pipe2"));
  s.err.reset(fds[0]);
  child_err.reset(fds[1]);
  if (!warm) {
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail(errno_text("pipe2"));
    child_in.reset(fds[0]);
    s.in.reset(fds[1]);
    set_nonblocking(s.in.get());
    ::fcntl(s.in.get(), F_SETPIPE_SZ, 1 << 20);
    ::fcntl(s.out.get(), F_SETPIPE_SZ, 1 << 20);
  }
  set_nonblocking(s.out.get());
  set_nonblocking(s.err.get());

  assignment a{.code_dir = req.code_dir,
               .tmp_bytes = int64_t(spec.tmp_mb()) * megabyte,
               .stdio = {warm ? dev_null_.get() : child_in.get(), child_out.get(), child_err.get(),
                         warm ? child_sock.get() : dev_null_.get()},
               .env = environment_of(spec, req.env)};
  if (spec.runtime() == p::Runtime::python3) {
    a.handler = std::string(p::view(spec.handler()));
  } else if (spec.runtime() == p::Runtime::nodejs) {
    a.program = opts_.nodejs.string();
    // V8's heap stays inside the sandbox's memory, with room for the rest of the process.
    a.argv = {"node", "--max-old-space-size=" + std::to_string(std::max<uint32_t>(64, spec.memory_mb() * 3 / 4)),
              nodejs_shim_inside, std::string(p::view(spec.handler()))};
  } else {
    // native / exec: a program (relative to the code folder, or absolute) and its words.
    a.argv = words_of(p::view(spec.handler()));
    if (a.argv.empty()) return fail("the function has no handler program");
    a.program = a.argv[0].starts_with('/') ? a.argv[0] : "/var/task/" + a.argv[0];
  }
  s.cpu_at_start = sp.cgroup.cpu();
  if (sp.cgroup_id) s.meter_ns_at_start = opts_.meter->cpu_ns(sp.cgroup_id).value_or(0);
  if (auto ok = assign(sp.control.get(), a); !ok) return fail("cannot start the sandbox: " + ok.error());
  s.pid = std::exchange(sp.pid, 0);
  s.pidfd = std::move(sp.pidfd);
  s.cgroup = std::move(sp.cgroup);
  s.name = std::move(sp.name);
  s.cgroup_id = std::exchange(sp.cgroup_id, 0);
  s.net_id = std::exchange(sp.net_id, 0);
  return s;
}

}  // namespace fnmesh::node
