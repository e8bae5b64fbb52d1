#include "node/sandbox/sandbox.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <span>
#include <stdexcept>

#include "flatbuffers/proto.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace fnmesh::node {
namespace {

constexpr uid_t inside_id = 1000;

// One mount the spare makes to build its root, prepared before clone3.
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

// The bounding set: what an exec could still grant. One system call per capability, so
// the spare does it while init maps its uid.
bool drop_bounding_set(int last_cap) {
  for (int cap = 0; cap <= last_cap; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return false;
  return true;
}

bool drop_capabilities() {
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return false;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  return ::syscall(SYS_capset, &header, data) == 0;
}

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
  phase_map = -15,
  phase_code = -16,
  phase_tmp = -17,
  phase_assignment = -18,
  phase_running = -19,  // not a failure: set up, the program starts
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
    case phase_init: return "start the sandbox's init";
    case phase_user_ns: return "new user namespace";
    case phase_map: return "map uid 1000";
    case phase_code: return "mount the code at /var/task";
    case phase_tmp: return "mount /tmp";
    case phase_assignment: return "receive the function";
  }
  return "set up";
}

struct child_report {
  int32_t phase;  // a step index, or a phase
  int32_t error;
};

// Everything the spare needs, laid out before clone3 (descriptors >= 10: 0..3 stay free
// for the function's).
struct prepared {
  std::string root;
  std::vector<step> steps;
  std::string uid_map, gid_map;
  int sync_fd = -1;     // the child reads the go byte here (its v1 cgroups are attached)
  int status_fd = -1;   // stage one failures; EOF = the spare waits
  int control_fd = -1;  // the spare's end of its control socket
  int last_cap = 40;
  int64_t tmp_bytes = 0;  // the size /tmp is mounted with
  bool host_network = false;
  bool prefault = false;
  const sock_fprog* seccomp = nullptr;
  const zygote_runtime* runtime = nullptr;
};

std::string tmp_options(int64_t bytes) { return "mode=1777,size=" + std::to_string(bytes); }

void prepare(const sandbox_host& host, const spare_plan& plan, prepared& p) {
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
  p.steps.push_back({.what = step::op::mount, .source = "proc", .target = p.root + "/proc", .fstype = "proc",
                     .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC});
  p.tmp_bytes = std::max<int64_t>(plan.tmp_bytes, 4096);
  p.steps.push_back({.what = step::op::mount, .source = "tmpfs", .target = p.root + "/tmp", .fstype = "tmpfs",
                     .data = tmp_options(p.tmp_bytes), .flags = MS_NOSUID | MS_NODEV});
  p.uid_map = std::to_string(inside_id) + " " + std::to_string(host.options().outside_uid) + " 1\n";
  p.gid_map = std::to_string(inside_id) + " " + std::to_string(host.options().outside_gid) + " 1\n";
  p.last_cap = host.last_capability();
  p.host_network = plan.host_network;
  p.prefault = plan.prefault;
  p.seccomp = plan.seccomp;
}

// ---- the spare: a copy of the single-threaded zygote ----

[[noreturn]] void fail(int fd, int32_t phase, int error) {
  child_report r{phase, error};
  [[maybe_unused]] auto n = ::write(fd, &r, sizeof r);
  ::_exit(127);
}

// Moves a descriptor to >= 10, close-on-exec.
int high(int fd) {
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  ::close(fd);
  return moved;
}

// Closes every descriptor but `keep`.
void close_all_but(std::initializer_list<int> keep) {
  int sorted[4] = {-1, -1, -1, -1};
  const size_t n = std::min(keep.size(), std::size(sorted));
  std::copy_n(keep.begin(), n, sorted);
  std::sort(sorted, sorted + n);
  unsigned next = 0;
  for (int fd : std::span(sorted, n)) {
    if (unsigned(fd) > next) ::syscall(SYS_close_range, next, unsigned(fd) - 1, 0U);
    next = unsigned(fd) + 1;
  }
  ::syscall(SYS_close_range, next, ~0U, 0U);
}

// Copies in every private writable page the runtime shares with the zygote, so that it
// does not take a copy-on-write fault per page later (~30 us each on our machines).
void prefault() {
  constexpr int populate_write = 23;  // MADV_POPULATE_WRITE, Linux 5.14
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long from = 0, to = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &from, &to, perms) != 3) continue;
    if (perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p')
      ::madvise(reinterpret_cast<void*>(from), to - from, populate_write);
  }
}

// The sandbox's pid 1: maps its runtime's uid when asked, then holds no privilege and no
// descriptor, reaps every process and exits with the runtime: its exit code, or 128 + the
// signal that killed it (pid 1 itself cannot die of a signal sent from inside).
[[noreturn]] void init(const prepared& p, pid_t runtime, int requests, int replies) {
  close_all_but({requests, replies});
  char asked = 0;
  if (::read(requests, &asked, 1) == 1) {
    const std::string proc = "/proc/" + std::to_string(runtime);
    auto write_file = [](const std::string& path, const std::string& text) {
      int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == ssize_t(text.size());
      if (fd >= 0) ::close(fd);
      return ok;
    };
    const char answer =
        write_file(proc + "/uid_map", p.uid_map) && write_file(proc + "/gid_map", p.gid_map) ? 'g' : 'x';
    [[maybe_unused]] auto n = ::write(replies, &answer, 1);
  }
  drop_capabilities();  // init never execs: its bounding set grants nothing
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  ::syscall(SYS_close_range, 0U, ~0U, 0U);
  for (;;) {
    int status = 0;
    long r = ::syscall(SYS_wait4, -1, &status, 0, nullptr);
    if (r == runtime) ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    if (r < 0 && errno == ECHILD) ::_exit(127);
  }
}

struct received_assignment {
  std::vector<uint8_t> message;
  int fds[5] = {-1, -1, -1, -1, -1};  // 0..3, then the code tree
};

bool receive_assignment(int control, received_assignment& r) {
  r.message.resize(256 * 1024);
  iovec iov{r.message.data(), r.message.size()};
  alignas(cmsghdr) char cmsg[CMSG_SPACE(sizeof(int) * 5)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cmsg;
  msg.msg_controllen = sizeof cmsg;
  ssize_t n;
  while ((n = ::recvmsg(control, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (n <= 0) return false;
  r.message.resize(size_t(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      std::memcpy(r.fds, CMSG_DATA(c), std::min(sizeof r.fds, size_t(c->cmsg_len - CMSG_LEN(0))));
  return true;
}

std::vector<char*> pointers(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
  std::vector<char*> out;
  if (v)
    for (const auto* s : *v) out.push_back(const_cast<char*>(s->c_str()));
  out.push_back(nullptr);
  return out;
}

// pid 2: waits for its function, then becomes it.
[[noreturn]] void become_function(const prepared& p, int to_init, int from_init) {
  const int control = p.control_fd;
  received_assignment r;
  if (!receive_assignment(control, r)) ::_exit(0);  // discarded unused
  const auto* a = proto::verified<proto::SpareAssignment>(r.message);
  if (!a || r.fds[4] < 0 || std::any_of(r.fds, r.fds + 4, [](int fd) { return fd < 0; }))
    fail(control, phase_assignment, EINVAL);
  if (::move_mount(r.fds[4], "", AT_FDCWD, "/var/task", MOVE_MOUNT_F_EMPTY_PATH) != 0)
    fail(control, phase_code, errno);
  ::close(r.fds[4]);
  const int64_t tmp_bytes = std::max<int64_t>(a->tmp_bytes(), 4096);
  if (tmp_bytes != p.tmp_bytes &&
      ::mount(nullptr, "/tmp", nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV, tmp_options(tmp_bytes).c_str()) != 0)
    fail(control, phase_tmp, errno);

  // Its own user namespace, which owns none of the namespaces above: even a capability
  // regained in it would grant nothing over them. Init maps uid 1000.
  if (::unshare(CLONE_NEWUSER) != 0) fail(control, phase_user_ns, errno);
  char answer = 0;
  if (::write(to_init, "m", 1) != 1) fail(control, phase_map, errno);
  if (!drop_bounding_set(p.last_cap)) fail(control, phase_capabilities, errno);
  if (::read(from_init, &answer, 1) != 1 || answer != 'g') fail(control, phase_map, EPERM);
  ::close(to_init);
  ::close(from_init);
  if (::unshare(CLONE_NEWCGROUP) != 0) fail(control, phase_cgroup_ns, errno);
  // Its uid 0 is not mapped in the new namespace, so the switch keeps the capabilities
  // there: dropped below.
  if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, inside_id, inside_id, inside_id) != 0 ||
      ::syscall(SYS_setresuid, inside_id, inside_id, inside_id) != 0)
    fail(control, phase_ids, errno);
  // Descriptors: sources below 4 move out of the way before the dup2s.
  int fds[4];
  for (int i = 0; i < 4; ++i) {
    fds[i] = r.fds[i] < 4 ? ::fcntl(r.fds[i], F_DUPFD_CLOEXEC, 10) : r.fds[i];
    if (fds[i] < 0) fail(control, phase_descriptors, errno);
  }
  for (int i = 0; i < 4; ++i)
    if (::dup2(fds[i], i) < 0) fail(control, phase_descriptors, errno);
  if (::chdir("/var/task") != 0) fail(control, phase_workdir, errno);
  if (!drop_capabilities()) fail(control, phase_capabilities, errno);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(control, phase_capabilities, errno);
  if (p.seccomp && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p.seccomp) != 0)
    fail(control, phase_seccomp, errno);
  // The zygote keeps every disposition at its default (serve_zygote): only the mask
  // clone3 ran under remains.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  child_report running{phase_running, 0};
  if (::write(control, &running, sizeof running) != sizeof running) ::_exit(127);

  if (a->program() && a->program()->size() > 0) {
    ::syscall(SYS_close_range, 4U, ~0U, CLOSE_RANGE_CLOEXEC);
    auto argv = pointers(a->argv());
    auto envp = pointers(a->env());
    ::execve(a->program()->c_str(), argv.data(), envp.data());
    fail(control, phase_exec, errno);
  }
  if (!p.runtime) fail(control, phase_exec, ENOEXEC);
  runtime_assignment ra{.handler = std::string(proto::view(a->handler()))};
  if (a->env())
    for (const auto* e : *a->env()) ra.env.emplace_back(e->string_view());
  ::syscall(SYS_close_range, 4U, ~0U, 0U);  // the control socket too: EOF tells the node
  p.runtime->serve(std::move(ra));
  ::_exit(0);
}

// Stage one, in the clone3'd child.
[[noreturn]] void spare_main(const prepared& p) {
  close_all_but({p.sync_fd, p.status_fd, p.control_fd});
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail(p.status_fd, phase_private, errno);
  for (size_t i = 0; i < p.steps.size(); ++i)
    if (int e = run_step(p.steps[i])) fail(p.status_fd, int32_t(i), e);
  if (::chdir(p.root.c_str()) != 0 || ::syscall(SYS_pivot_root, ".", ".") != 0 ||
      ::umount2(".", MNT_DETACH) != 0 || ::chdir("/") != 0)
    fail(p.status_fd, phase_pivot, errno);
  // Not nodev: the base's /dev nodes live on it. Nothing can make a new one.
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, nullptr) != 0)
    fail(p.status_fd, phase_root_read_only, errno);
  if (::sethostname("sandbox", 7) != 0) fail(p.status_fd, phase_hostname, errno);
  if (!p.host_network && !loopback_up()) fail(p.status_fd, phase_loopback, errno);
  char go = 0;
  if (::read(p.sync_fd, &go, 1) != 1) ::_exit(127);  // the zygote gave up
  ::close(p.sync_fd);

  int up[2], down[2];
  if (::pipe2(up, O_CLOEXEC) != 0 || ::pipe2(down, O_CLOEXEC) != 0) fail(p.status_fd, phase_init, errno);
  for (int* fd : {&up[0], &up[1], &down[0], &down[1]}) *fd = high(*fd);
  pid_t runtime = pid_t(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
  if (runtime < 0) fail(p.status_fd, phase_init, errno);
  if (runtime > 0) init(p, runtime, up[0], down[1]);
  ::close(up[0]);
  ::close(down[1]);
  if (p.prefault) prefault();
  ::close(p.status_fd);  // EOF: the spare waits
  become_function(p, up[1], down[0]);
}

// ---- the zygote and the node ----

std::string errno_text(int e) { return std::strerror(e); }

std::string describe(const child_report& r, const prepared* p) {
  std::string what = p && r.phase >= 0 && size_t(r.phase) < p->steps.size() ? p->steps[size_t(r.phase)].describe()
                                                                           : phase_name(r.phase);
  return what + ": " + errno_text(r.error);
}

ssize_t read_report(int fd, child_report& r) {
  ssize_t n;
  while ((n = ::read(fd, &r, sizeof r)) < 0 && errno == EINTR) {
  }
  return n;
}


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

sandbox_result<spare_sandbox> make_spare(const sandbox_host& host, const spare_plan& plan,
                                         const zygote_runtime* runtime, uint64_t clone_flags_extra) {
  prepared p;
  prepare(host, plan, p);
  p.runtime = runtime;
  int sync[2], status[2], control[2];
  if (::pipe2(sync, O_CLOEXEC) != 0) return std::unexpected("pipe2: " + errno_text(errno));
  unique_fd sync_read(high(sync[0])), sync_write(sync[1]);
  if (::pipe2(status, O_CLOEXEC) != 0) return std::unexpected("pipe2: " + errno_text(errno));
  unique_fd status_read(status[0]), status_write(high(status[1]));
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) != 0)
    return std::unexpected("socketpair: " + errno_text(errno));
  unique_fd node_end(control[0]), spare_end(high(control[1]));
  if (!sync_read || !status_write || !spare_end) return std::unexpected("fcntl: " + errno_text(errno));
  p.sync_fd = sync_read.get();
  p.status_fd = status_write.get();
  p.control_fd = spare_end.get();

  clone_args args{};
  args.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | clone_flags_extra;
  if (!plan.host_network) args.flags |= CLONE_NEWNET;
  if (plan.cgroup_v2_dir >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = uint64_t(plan.cgroup_v2_dir);
  }
  // A CLONE_PARENT child takes the caller's own exit signal; clone3 refuses another.
  args.exit_signal = (clone_flags_extra & CLONE_PARENT) ? 0 : SIGCHLD;
  // The child starts with every signal blocked: no handler of ours runs in it.
  sigset_t all, old;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, &old);
  if (runtime && runtime->before_clone) runtime->before_clone();
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) spare_main(p);
  int clone_errno = errno;
  if (runtime && runtime->after_clone) runtime->after_clone();
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return std::unexpected("clone3: " + errno_text(clone_errno));
  sync_read.reset();
  status_write.reset();
  spare_end.reset();

  const bool own_child = !(clone_flags_extra & CLONE_PARENT);
  auto abandon = [&](std::string why) -> sandbox_result<spare_sandbox> {
    ::kill(pid_t(pid), SIGKILL);
    if (own_child) ::waitpid(pid_t(pid), nullptr, 0);
    return std::unexpected(std::move(why));
  };
  // Its v1 cgroups, while it builds its root: before it forks its runtime.
  for (const auto& dir : plan.cgroup_v1_dirs) {
    int fd = ::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    const std::string text = std::to_string(pid);
    bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == ssize_t(text.size());
    int e = errno;
    if (fd >= 0) ::close(fd);
    if (!ok) return abandon("cannot attach the sandbox to " + dir + ": " + errno_text(e));
  }
  if (::write(sync_write.get(), "g", 1) != 1) return abandon("cannot start the sandbox: " + errno_text(errno));
  child_report report{};
  ssize_t n = read_report(status_read.get(), report);
  if (n == 0) return spare_sandbox{.pid = pid_t(pid), .control = std::move(node_end)};
  if (own_child) ::waitpid(pid_t(pid), nullptr, 0);
  return std::unexpected(n == sizeof report ? describe(report, &p) : std::string("set up: the sandbox exited"));
}

sandbox_result<void> assign(int control, const assignment& a) {
  // The code: a read-only copy of its mount, which the spare attaches at /var/task.
  unique_fd code(::open_tree(AT_FDCWD, a.code_dir.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
  if (!code) return std::unexpected("open_tree " + a.code_dir.string() + ": " + errno_text(errno));
  mount_attr attr{.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
  if (::mount_setattr(code.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0)
    return std::unexpected("make " + a.code_dir.string() + " read-only: " + errno_text(errno));

  flatbuffers::FlatBufferBuilder b(1024);
  auto strings = [&](const std::vector<std::string>& v) {
    std::vector<flatbuffers::Offset<flatbuffers::String>> out;
    for (const auto& s : v) out.push_back(b.CreateString(s));
    return b.CreateVector(out);
  };
  b.Finish(proto::CreateSpareAssignment(b, a.tmp_bytes, b.CreateString(a.program), strings(a.argv), strings(a.env),
                                        b.CreateString(a.handler)));
  const int fds[5] = {a.stdio[0], a.stdio[1], a.stdio[2], a.stdio[3], code.get()};
  iovec iov{b.GetBufferPointer(), b.GetSize()};
  alignas(cmsghdr) char cmsg[CMSG_SPACE(sizeof fds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cmsg;
  msg.msg_controllen = sizeof cmsg;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof fds);
  std::memcpy(CMSG_DATA(c), fds, sizeof fds);
  if (::sendmsg(control, &msg, MSG_NOSIGNAL) < 0) return std::unexpected("the spare sandbox is gone: " + errno_text(errno));

  // Reports until EOF: `running` once set up, then a failure only if the exec failed.
  bool running = false;
  child_report report{};
  for (;;) {
    ssize_t n = read_report(control, report);
    if (n == 0) break;
    if (n != sizeof report) return std::unexpected("the spare sandbox failed: " + errno_text(n < 0 ? errno : EIO));
    if (report.phase != phase_running) {
      std::string what = describe(report, nullptr);
      if (report.phase == phase_exec) what = "exec " + a.program + ": " + errno_text(report.error);
      return std::unexpected(what);
    }
    running = true;
  }
  if (!running) return std::unexpected(std::string("the spare sandbox exited before it ran"));
  return {};
}

}  // namespace fnmesh::node
