#include "node/sandbox/sandbox.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace fnmesh::node {
namespace {

constexpr uid_t inside_id = 1000;

// One mount the child makes to build its root, prepared by the parent: the child only
// makes system calls (it must not allocate: the node is multi-threaded).
struct step {
  enum class op : uint8_t { bind, bind_read_only, mount };
  op what;
  std::string source, target, fstype, data;
  unsigned long flags = 0;

  std::string describe() const {
    switch (what) {
      case op::bind: return "bind " + source + " at " + target;
      case op::bind_read_only: return "bind " + source + " read-only at " + target;
      case op::mount: return "mount " + fstype + " at " + target;
    }
    return "?";
  }
};

// The fixed phases after the steps, as reported by a failing child.
enum phase : int32_t {
  phase_ids = -1,
  phase_cgroup_ns = -2,
  phase_private = -3,
  phase_pivot = -4,
  phase_root_read_only = -5,
  phase_hostname = -6,
  phase_loopback = -7,
  phase_descriptors = -8,
  phase_workdir = -9,
  phase_capabilities = -10,
  phase_seccomp = -11,
  phase_exec = -12,
  phase_init = -13,
  phase_user_ns = -14,
  phase_map_request = -15,  // not a failure: the child asks for its uid map
  phase_network = -16,
};

const char* phase_name(int32_t p) {
  switch (p) {
    case phase_ids: return "switch to uid 1000";
    case phase_cgroup_ns: return "new cgroup namespace";
    case phase_private: return "make mounts private";
    case phase_pivot: return "pivot_root";
    case phase_root_read_only: return "make the root read-only";
    case phase_hostname: return "set the host name";
    case phase_loopback: return "bring up loopback";
    case phase_descriptors: return "set up descriptors 0-3";
    case phase_workdir: return "chdir /var/task";
    case phase_capabilities: return "drop capabilities";
    case phase_seccomp: return "install the seccomp filter";
    case phase_exec: return "exec";
    case phase_init: return "start the runtime under the sandbox's init";
    case phase_user_ns: return "new user namespace";
    case phase_network: return "join its network namespace";
  }
  return "set up";
}

struct child_report {
  int32_t phase;  // a step index, or a phase
  int32_t error;
};

// Everything the child needs, laid out before clone3.
struct prepared {
  std::string root;
  std::vector<step> steps;
  std::vector<std::string> argv_s, env_s;
  std::vector<char*> argv, envp;
  std::string program;
  int stdio[4] = {-1, -1, -1, -1};
  int sync_fd = -1;     // the child reads the go byte here
  int status_fd = -1;   // the child reports a failure here; EOF = it is running
  int last_cap = 40;
  bool host_network = false;
  int network_namespace = -1;
  const sock_fprog* seccomp = nullptr;
};

void prepare(const sandbox_host& host, const sandbox_plan& plan, prepared& p) {
  p.root = host.base().string();
  auto bind_read_only = [&](std::string source, const std::string& inside) {
    p.steps.push_back({.what = step::op::bind_read_only, .source = std::move(source), .target = p.root + inside});
  };
  p.steps.push_back({.what = step::op::bind, .source = p.root, .target = p.root});  // the root: a mount point
  bind_read_only("/usr", "/usr");
  for (const auto& d : host.root_dirs()) bind_read_only("/" + d, "/" + d);
  if (plan.host_network)
    for (const char* f : {"/etc/resolv.conf", "/etc/ssl/certs"})
      if (std::filesystem::exists(f)) bind_read_only(f, f);
  bind_read_only(plan.code_dir.string(), "/var/task");
  p.steps.push_back({.what = step::op::mount, .source = "tmpfs", .target = p.root + "/tmp", .fstype = "tmpfs",
                     .data = "mode=1777,size=" + std::to_string(std::max<int64_t>(plan.tmp_bytes, 4096)),
                     .flags = MS_NOSUID | MS_NODEV});
  p.steps.push_back({.what = step::op::mount, .source = "proc", .target = p.root + "/proc", .fstype = "proc",
                     .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC});

  p.program = plan.program;
  p.argv_s = plan.argv;
  p.env_s = plan.env;
  for (auto& a : p.argv_s) p.argv.push_back(a.data());
  p.argv.push_back(nullptr);
  for (auto& e : p.env_s) p.envp.push_back(e.data());
  p.envp.push_back(nullptr);
  for (int i = 0; i < 4; ++i) p.stdio[i] = plan.stdio[i];
  p.last_cap = host.last_capability();
  p.host_network = plan.host_network;
  if (!plan.host_network) p.network_namespace = plan.network_namespace;
  p.seccomp = plan.seccomp;
}

// ---- the child: system calls only ----

[[noreturn]] void child_fail(const prepared& p, int32_t phase, int error) {
  child_report r{phase, error};
  [[maybe_unused]] auto n = ::write(p.status_fd, &r, sizeof r);
  ::_exit(127);
}

int run_step(const step& s) {
  switch (s.what) {
    case step::op::bind:
      return ::mount(s.source.c_str(), s.target.c_str(), nullptr, MS_BIND, nullptr) == 0 ? 0 : errno;
    case step::op::bind_read_only:
      if (::mount(s.source.c_str(), s.target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) return errno;
      return ::mount(nullptr, s.target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
                     nullptr) == 0
                 ? 0
                 : errno;
    case step::op::mount:
      return ::mount(s.source.c_str(), s.target.c_str(), s.fstype.c_str(), s.flags,
                     s.data.empty() ? nullptr : s.data.c_str()) == 0
                 ? 0
                 : errno;
  }
  return EINVAL;
}

bool loopback_up() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, "lo", 3);
  bool ok = ::ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
  if (ok) {
    ifr.ifr_flags = short(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    ok = ::ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
  }
  ::close(fd);
  return ok;
}

bool drop_capabilities(int last_cap) {
  for (int cap = 0; cap <= last_cap; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return false;
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return false;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  return ::syscall(SYS_capset, &header, data) == 0;
}

// Signals as a fresh program expects them: default dispositions, nothing blocked.
void reset_signals() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// The sandbox's pid 1: holds no descriptor, reaps every process and exits with the
// runtime: its exit code, or 128 + the signal that killed it (pid 1 itself cannot die of
// a signal sent from inside its namespace).
[[noreturn]] void init(pid_t runtime) {
  ::syscall(SYS_close_range, 0U, ~0U, 0U);
  for (;;) {
    int status = 0;
    long r = ::syscall(SYS_wait4, -1, &status, 0, nullptr);
    if (r == runtime) ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    if (r < 0 && errno == ECHILD) ::_exit(127);
  }
}

// Returns only in a child without a program (the zygote's), set up and running.
void child_main(const prepared& p) {
  // The root is built with the node's own credentials, so every path the node can reach
  // is reachable here, in namespaces the host's user namespace owns.
  if (p.network_namespace >= 0 && ::setns(p.network_namespace, CLONE_NEWNET) != 0)
    child_fail(p, phase_network, errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) child_fail(p, phase_private, errno);
  for (size_t i = 0; i < p.steps.size(); ++i)
    if (int e = run_step(p.steps[i])) child_fail(p, int32_t(i), e);
  if (::chdir(p.root.c_str()) != 0 || ::syscall(SYS_pivot_root, ".", ".") != 0 ||
      ::umount2(".", MNT_DETACH) != 0 || ::chdir("/") != 0)
    child_fail(p, phase_pivot, errno);
  // Not nodev: the base's /dev nodes live on it. Nothing can make a new one.
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, nullptr) != 0)
    child_fail(p, phase_root_read_only, errno);
  if (::sethostname("sandbox", 7) != 0) child_fail(p, phase_hostname, errno);
  if (!p.host_network && p.network_namespace < 0 && !loopback_up()) child_fail(p, phase_loopback, errno);

  // Then the sandbox's own user namespace, which owns none of the namespaces above: even
  // a capability regained in it would grant nothing over them. The parent maps its uid
  // and attaches the v1 cgroups, then says go.
  if (::unshare(CLONE_NEWUSER) != 0) child_fail(p, phase_user_ns, errno);
  child_report ask{phase_map_request, 0};
  char go = 0;
  if (::write(p.status_fd, &ask, sizeof ask) != sizeof ask || ::read(p.sync_fd, &go, 1) != 1)
    ::_exit(127);  // the parent gave up
  ::close(p.sync_fd);
  if (::unshare(CLONE_NEWCGROUP) != 0) child_fail(p, phase_cgroup_ns, errno);
  // Raw system calls: glibc's wrappers would signal the node's other threads, which this
  // copy of the node does not have. Its uid 0 is not mapped in the new namespace, so the
  // switch keeps the capabilities there: dropped below.
  if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, inside_id, inside_id, inside_id) != 0 ||
      ::syscall(SYS_setresuid, inside_id, inside_id, inside_id) != 0)
    child_fail(p, phase_ids, errno);

  // Descriptors: sources below 4 move out of the way before the dup2s.
  int fds[4];
  for (int i = 0; i < 4; ++i) {
    fds[i] = p.stdio[i];
    if (fds[i] >= 0 && fds[i] < 4) fds[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
    if (fds[i] < 0) child_fail(p, phase_descriptors, errno ? errno : EBADF);
  }
  for (int i = 0; i < 4; ++i)
    if (::dup2(fds[i], i) < 0) child_fail(p, phase_descriptors, errno);
  if (::chdir("/var/task") != 0) child_fail(p, phase_workdir, errno);
  if (!drop_capabilities(p.last_cap)) child_fail(p, phase_capabilities, errno);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(p, phase_capabilities, errno);
  if (p.seccomp && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p.seccomp) != 0)
    child_fail(p, phase_seccomp, errno);

  // pid 1 stays a minimal init: it reaps what the function leaves behind and ends with
  // the runtime, its child, so that a signal the runtime sends itself acts as anywhere.
  // A program to exec starts with vfork (no copy of this address space, init waits for
  // the exec); the zygote's runtime goes on in this copy, so it needs a real fork.
  pid_t runtime = p.program.empty() ? pid_t(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)) : ::vfork();
  if (runtime < 0) child_fail(p, phase_init, errno);
  if (runtime > 0) init(runtime);

  if (p.program.empty()) {
    // Everything but 0..3 goes; the status pipe last: its EOF tells the parent we run.
    ::syscall(SYS_close_range, 4U, ~0U, 0U);
    return;
  }
  ::syscall(SYS_close_range, 4U, ~0U, CLOSE_RANGE_CLOEXEC);
  reset_signals();
  ::execve(p.program.c_str(), p.argv.data(), p.envp.data());
  child_fail(p, phase_exec, errno);
}

// ---- the parent ----

bool write_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
  ::close(fd);
  return ok;
}

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

namespace {

void write_text(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("sandbox: cannot write " + path.string());
}

}  // namespace

sandbox_host::sandbox_host(sandbox_host_options opts) : opts_(std::move(opts)), base_(opts_.staging / "base") {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::ifstream cap("/proc/sys/kernel/cap_last_cap");
  if (!(cap >> last_cap_)) last_cap_ = 40;
  // The host's top-level /bin, /sbin, /lib*: links (merged /usr) are copied, directories bound.
  const char* const top[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
  for (const char* name : top)
    if (!fs::is_symlink(fs::path("/") / name, ec) && fs::is_directory(fs::path("/") / name, ec)) dirs_.push_back(name);
  if (!opts_.make_base) return;

  fs::remove_all(base_, ec);  // a previous run's: only plain files, the mounts were in sandboxes
  for (const char* d : {"usr", "etc/ssl/certs", "var/task", "tmp", "proc", "dev"}) fs::create_directories(base_ / d, ec);
  if (ec) throw std::runtime_error("sandbox: cannot make " + base_.string() + ": " + ec.message());
  for (const char* name : top) {
    fs::path p = fs::path("/") / name;
    if (fs::is_symlink(p, ec)) fs::create_directory_symlink(fs::read_symlink(p, ec), base_ / name, ec);
  }
  for (const auto& d : dirs_) fs::create_directories(base_ / d, ec);
  // /etc: what dynamic linking, time zones and TLS settings need, copied; nothing with
  // secrets. resolv.conf and the CA certificates are bound for host networking only.
  for (const char* f : {"ld.so.cache", "localtime", "nsswitch.conf", "ssl/openssl.cnf"})
    if (fs::exists(fs::path("/etc") / f, ec)) fs::copy_file(fs::path("/etc") / f, base_ / "etc" / f, ec);
  if (fs::is_directory("/etc/alternatives", ec))
    fs::copy("/etc/alternatives", base_ / "etc/alternatives", fs::copy_options::copy_symlinks, ec);
  write_text(base_ / "etc/resolv.conf", "");
  write_text(base_ / "etc/passwd", "sandbox:x:1000:1000:sandbox:/tmp:/usr/sbin/nologin\n");
  write_text(base_ / "etc/group", "sandbox:x:1000:\n");
  write_text(base_ / "etc/hosts", "127.0.0.1 localhost\n::1 localhost\n");
  write_text(base_ / "etc/hostname", "sandbox\n");
  // A minimal /dev: the nodes themselves (the node is root), so no sandbox binds them.
  for (auto [name, minor] : {std::pair{"null", 3}, {"zero", 5}, {"full", 7}, {"random", 8}, {"urandom", 9}})
    if (::mknod((base_ / "dev" / name).c_str(), S_IFCHR | 0666, makedev(1, minor)) != 0 ||
        ::chmod((base_ / "dev" / name).c_str(), 0666) != 0)
      throw std::runtime_error(std::string("sandbox: cannot make /dev/") + name + ": " + std::strerror(errno));
  for (auto [name, target] : {std::pair{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
                              {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}})
    fs::create_symlink(target, base_ / "dev" / name, ec);
  for (const auto& f : opts_.files) {
    fs::path inside = base_ / fs::path(f.inside).relative_path();
    fs::create_directories(inside.parent_path(), ec);
    if (!fs::copy_file(f.host, inside, fs::copy_options::overwrite_existing, ec))
      throw std::runtime_error("sandbox: cannot copy " + f.host.string() + ": " + ec.message());
  }
  for (auto& entry : fs::recursive_directory_iterator(base_, ec))
    if (entry.is_directory() && !entry.is_symlink()) fs::permissions(entry.path(), fs::perms(0755), ec);
}

sandbox_result clone_sandbox(const sandbox_host& host, const sandbox_plan& plan,
                             uint64_t clone_flags_extra) {
  prepared p;
  prepare(host, plan, p);
  int sync[2], status[2];
  if (::pipe2(sync, O_CLOEXEC) != 0) return std::unexpected("pipe2: " + errno_text(errno));
  unique_fd sync_read(sync[0]), sync_write(sync[1]);
  if (::pipe2(status, O_CLOEXEC) != 0) return std::unexpected("pipe2: " + errno_text(errno));
  unique_fd status_read(status[0]);
  // The child's end must survive its dup2s onto 0..3.
  unique_fd status_write(::fcntl(status[1], F_DUPFD_CLOEXEC, 10));
  ::close(status[1]);
  if (!status_write) return std::unexpected("fcntl: " + errno_text(errno));
  p.sync_fd = sync_read.get();
  p.status_fd = status_write.get();

  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD | clone_flags_extra;
  if (!plan.host_network && plan.network_namespace < 0) args.flags |= CLONE_NEWNET;
  if (plan.cgroup_v2_dir >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = uint64_t(plan.cgroup_v2_dir);
  }
  args.pidfd = uint64_t(reinterpret_cast<uintptr_t>(&pidfd));
  // A CLONE_PARENT child takes the caller's own exit signal; clone3 refuses another.
  args.exit_signal = (clone_flags_extra & CLONE_PARENT) ? 0 : SIGCHLD;

  // The child starts with every signal blocked: no handler of ours runs in it.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) {
    child_main(p);
    // Running in the sandbox: these numbers are closed or reused for fds 0..3 by now.
    sync_read.release();
    sync_write.release();
    status_read.release();
    status_write.release();
    return started_sandbox{};
  }
  int clone_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return std::unexpected("clone3: " + errno_text(clone_errno));
  started_sandbox started{.pid = pid_t(pid), .pidfd = unique_fd(pidfd)};
  sync_read.reset();
  status_write.reset();

  const bool own_child = !(clone_flags_extra & CLONE_PARENT);
  auto abandon = [&](std::string why) -> sandbox_result {
    ::kill(started.pid, SIGKILL);
    if (own_child) ::waitpid(started.pid, nullptr, 0);
    return std::unexpected(std::move(why));
  };
  // While the child builds its root: its v1 cgroups, before anything of the function runs.
  for (const auto& dir : plan.cgroup_v1_dirs)
    if (!write_file(dir + "/cgroup.procs", std::to_string(pid)))
      return abandon("cannot attach the sandbox to " + dir + ": " + errno_text(errno));

  child_report report{};
  auto next_report = [&] {
    ssize_t n;
    while ((n = ::read(status_read.get(), &report, sizeof report)) < 0 && errno == EINTR) {
    }
    return n;
  };
  ssize_t n = next_report();
  if (n == sizeof report && report.phase == phase_map_request) {
    const std::string proc = "/proc/" + std::to_string(pid);
    if (!write_file(proc + "/uid_map", std::to_string(inside_id) + " " + std::to_string(host.options().outside_uid) + " 1\n") ||
        !write_file(proc + "/gid_map", std::to_string(inside_id) + " " + std::to_string(host.options().outside_gid) + " 1\n"))
      return abandon("cannot map the sandbox's uid: " + errno_text(errno));
    if (::write(sync_write.get(), "g", 1) != 1) return abandon("cannot start the sandbox: " + errno_text(errno));
    n = next_report();
  }
  if (n == 0) return started;
  std::string what = n != sizeof report ? std::string("set up")
                     : report.phase >= 0 && size_t(report.phase) < p.steps.size()
                         ? p.steps[size_t(report.phase)].describe()
                         : phase_name(report.phase);
  if (report.phase == phase_exec) what += " " + p.program;
  if (own_child) ::waitpid(started.pid, nullptr, 0);
  return std::unexpected(what + ": " + errno_text(report.error));
}

result<unique_fd> make_network_namespace() {
  unique_fd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own) return fail_errno(errno);
  if (::unshare(CLONE_NEWNET) != 0) return fail_errno(errno);
  unique_fd made(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int e = made ? (loopback_up() ? 0 : errno) : errno;
  if (::setns(own.get(), CLONE_NEWNET) != 0) std::abort();  // this thread must not stay there
  if (e) return fail_errno(e);
  return made;
}

sandbox_result start_sandbox(const sandbox_host& host, const sandbox_plan& plan) {
  if (plan.program.empty()) return std::unexpected(std::string("no program to run"));
  return clone_sandbox(host, plan, 0);
}

}  // namespace fnmesh::node
