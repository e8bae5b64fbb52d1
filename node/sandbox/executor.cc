#include "node/sandbox/executor.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "common/clock.h"
#include "common/log.h"
#include "common/unique_fd.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace fnmesh::node {
namespace {

constexpr size_t frame_header_bytes = 4;
constexpr size_t read_chunk = 64 * 1024;
constexpr size_t spawn_stack_bytes = 64 * 1024;
// A worker that closed its end of the socket gets this long to exit on its own.
constexpr int64_t eof_grace_ns = 1'000'000'000;

enum class fd_role : uint64_t { sock = 0, out = 1, err = 2, pidfd = 3, in = 4, wake = 7 };

uint64_t tag(uint64_t worker_id, fd_role role) { return (worker_id << 3) | uint64_t(role); }

std::runtime_error sys_failure(const char* what) {
  return std::runtime_error(std::string("executor: ") + what + ": " + std::strerror(errno));
}

bool set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

void store_le32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
  p[2] = uint8_t(v >> 16);
  p[3] = uint8_t(v >> 24);
}

int64_t timeval_ns(const timeval& tv) { return int64_t(tv.tv_sec) * 1'000'000'000 + tv.tv_usec * 1000; }

std::string exit_text(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = ::sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended with status " + std::to_string(status);
}

// What the spawned child does between clone and exec. It shares the parent's memory
// (CLONE_VM | CLONE_VFORK, the parent waits), so it only makes system calls.
struct spawn_plan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;
  int fds[4] = {-1, -1, -1, -1};  // become the child's 0, 1, 2, 3
  pid_t parent = 0;
  int error = 0;                  // errno of the failed step, written by the child
  const char* step = nullptr;     // which step failed
};

int spawn_child(void* arg) {
  auto* p = static_cast<spawn_plan*>(arg);
  // No handler of the node may run here (this memory is the node's), and the program
  // starts with default dispositions for what the node ignores.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) != 0) continue;
    if (old.sa_handler != SIG_DFL && (old.sa_handler != SIG_IGN || sig == SIGPIPE || sig == SIGCHLD))
      ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != p->parent) ::_exit(127);
  ::setpgid(0, 0);  // its own group, so that a kill reaches what it started too
  // Sources below 4 would be clobbered by the dup2s: move them out of the way first.
  for (int& fd : p->fds) {
    if (fd >= 0 && fd < 4) fd = ::fcntl(fd, F_DUPFD, 10);
    if (fd < 0) {
      p->error = errno ? errno : EBADF;
      p->step = "dup";
      ::_exit(127);
    }
  }
  for (int i = 0; i < 4; ++i) {
    if (::dup2(p->fds[i], i) < 0) {
      p->error = errno;
      p->step = "dup2";
      ::_exit(127);
    }
  }
  ::syscall(SYS_close_range, 4U, ~0U, CLOSE_RANGE_CLOEXEC);
  if (p->cwd && ::chdir(p->cwd) != 0) {
    p->error = errno;
    p->step = "chdir to the code folder";
    ::_exit(127);
  }
  ::execve(p->path, p->argv, p->envp);
  p->error = errno;
  p->step = "exec";
  ::_exit(127);
}

// argv/envp as the NUL-terminated arrays execve wants, backed by owned strings.
struct c_strings {
  std::vector<std::string> owned;
  std::vector<char*> ptrs;
  char* const* get() {
    ptrs.clear();
    for (auto& s : owned) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
    return ptrs.data();
  }
};

// Reads a small /proc file through a kept-open descriptor.
std::string_view pread_text(int fd, char* buf, size_t cap) {
  ssize_t n = ::pread(fd, buf, cap - 1, 0);
  return n > 0 ? std::string_view(buf, size_t(n)) : std::string_view{};
}

}  // namespace

struct executor::impl {
  // One child process: a warm worker (python3, native) or a one-shot exec process.
  // Loop thread only.
  struct job {
    work w;
    outcome out;
    int64_t deadline_mono = 0;
    int64_t sent_mono = 0;
    size_t sent = 0;                 // frame bytes written so far (header included)
    uint8_t header[frame_header_bytes] = {};
    std::span<const uint8_t> payload;  // exec: what goes to stdin
  };

  struct worker {
    uint64_t id = 0;
    proto::Runtime runtime = proto::Runtime::python3;
    std::string pool_key;
    std::string function;            // for log lines
    broker::function_ptr spec;       // warm workers: the spec they were started for
    pid_t pid = 0;
    unique_fd pidfd, sock, out, err, in, stat_fd, status_fd, clear_refs_fd;
    std::optional<job> current;
    bool sock_open = false;
    bool want_out = false;           // EPOLLOUT registered on sock / in
    bool dying = false;              // killed or exiting; never handed work again
    int64_t kill_at_mono = 0;        // 0 = not scheduled
    int64_t idle_since_mono = 0;
    int64_t cpu_user_ns = 0;         // /proc figures at the end of the last invocation
    int64_t cpu_system_ns = 0;
    int64_t reply_ewma_ns = 0;       // warm round trips, smoothed
    std::vector<uint8_t> rbuf;
    size_t rlen = 0;
    std::string err_tail;
    std::string out_line, err_line;  // unfinished log lines
    std::vector<uint8_t> stdout_buf; // exec: the output
    bool stdout_over = false;
  };

  executor_options opts_;
  std::shared_ptr<spdlog::logger> log_ = logger("sandbox");
  unique_fd epoll_, wake_, dev_null_;
  std::thread thread_;
  pid_t self_pid_ = ::getpid();
  int64_t tick_ns_ = 1'000'000'000 / std::max<long>(1, ::sysconf(_SC_CLK_TCK));
  int64_t spin_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.spin).count();
  int64_t spin_until_mono_ = 0;  // loop thread: a fast reply is expected until then

  std::mutex mutex_;
  std::vector<work> queued_;
  std::vector<std::function<void()>> posted_;
  bool stop_ = false;
  std::atomic<bool> wake_pending_{false};

  // Loop thread only.
  std::unordered_map<uint64_t, std::unique_ptr<worker>> workers_;
  std::unordered_map<std::string, std::vector<worker*>> idle_;
  uint64_t next_id_ = 1;
  size_t busy_ = 0;
  bool draining_ = false;
  std::vector<std::promise<void>> drain_waiters_;
  std::unique_ptr<char[]> spawn_stack_ = std::make_unique<char[]>(spawn_stack_bytes);
  std::vector<uint8_t> scratch_ = std::vector<uint8_t>(read_chunk);
  std::atomic<size_t> warm_{0};
  mutable std::mutex warm_mutex_;
  std::unordered_map<std::string, size_t> warm_by_function_;  // "tenant/function"

  void count_warm(const proto::FunctionSpec& spec, int delta) {
    std::string key(proto::view(spec.tenant()));
    key += '/';
    key += proto::view(spec.name());
    std::lock_guard lock(warm_mutex_);
    auto& n = warm_by_function_[key];
    n += size_t(delta);
    if (n == 0) warm_by_function_.erase(key);
    warm_.fetch_add(size_t(delta), std::memory_order_relaxed);
  }

  explicit impl(executor_options opts) : opts_(std::move(opts)) {
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) throw sys_failure("epoll_create1");
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) throw sys_failure("eventfd");
    dev_null_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!dev_null_) throw sys_failure("open /dev/null");
    epoll_event ev{.events = EPOLLIN, .data = {.u64 = uint64_t(fd_role::wake)}};
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) throw sys_failure("epoll_ctl");
    thread_ = std::thread([this] { loop(); });
  }

  ~impl() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake();
    if (thread_.joinable()) thread_.join();
  }

  void wake() {
    if (wake_pending_.exchange(true, std::memory_order_seq_cst)) return;
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
  }

  // ---- loop ----

  void loop() {
    // Writes to a pipe whose reader died must return EPIPE, not kill the node.
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);

    epoll_event events[64];
    for (;;) {
      timespec ts{};
      int64_t next = next_timer();
      const timespec* timeout = nullptr;
      if (next > 0) {
        int64_t wait = std::max<int64_t>(0, next - mono_now_ns());
        ts.tv_sec = wait / 1'000'000'000;
        ts.tv_nsec = wait % 1'000'000'000;
        timeout = &ts;
      }
      int n = 0;
      if (busy_ > 0 && spin_until_mono_ > 0) {
        // A worker that answers within the spin window: catch its reply awake.
        const timespec zero{};
        while ((n = ::epoll_pwait2(epoll_.get(), events, 64, &zero, nullptr)) == 0 &&
               mono_now_ns() < spin_until_mono_) {
        }
        spin_until_mono_ = 0;
      }
      if (n == 0) n = ::epoll_pwait2(epoll_.get(), events, 64, timeout, nullptr);
      if (n < 0 && errno != EINTR) {
        log_->error("epoll_pwait2: {}", std::strerror(errno));
        continue;
      }
      for (int i = 0; i < n; ++i) dispatch(events[i]);
      if (take_posted()) break;
      fire_timers();
    }
    shut_down();
  }

  // Runs queued work and posted functions; true when the executor is stopping.
  bool take_posted() {
    std::vector<work> works;
    std::vector<std::function<void()>> fns;
    bool stop;
    {
      std::lock_guard lock(mutex_);
      works.swap(queued_);
      fns.swap(posted_);
      stop = stop_;
    }
    for (auto& w : works) start(std::move(w));
    for (auto& fn : fns) fn();
    return stop;
  }

  void dispatch(const epoll_event& ev) {
    auto role = fd_role(ev.data.u64 & 7);
    if (role == fd_role::wake) {
      // Drain first, then re-arm: a wake() that lands in between is seen by
      // take_posted(), which runs after this.
      uint64_t v;
      [[maybe_unused]] auto r = ::read(wake_.get(), &v, sizeof v);
      wake_pending_.store(false, std::memory_order_seq_cst);
      return;
    }
    auto it = workers_.find(ev.data.u64 >> 3);
    if (it == workers_.end()) return;
    worker& w = *it->second;
    switch (role) {
      case fd_role::sock:
        if (ev.events & EPOLLOUT) send_more(w);
        if ((ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && w.sock_open) read_sock(w);
        break;
      case fd_role::in:
        write_stdin(w);
        break;
      case fd_role::out:
        read_pipe(w, w.out, false);
        break;
      case fd_role::err:
        read_pipe(w, w.err, true);
        break;
      case fd_role::pidfd:
        reap(w);
        break;
      default:
        break;
    }
  }

  int64_t next_timer() const {
    int64_t next = 0;
    auto consider = [&](int64_t t) {
      if (t > 0 && (next == 0 || t < next)) next = t;
    };
    const int64_t keep_warm_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.keep_warm).count();
    for (auto& [id, w] : workers_) {
      if (w->current) consider(w->current->deadline_mono);
      consider(w->kill_at_mono);
      if (!w->current && !w->dying && w->idle_since_mono) consider(w->idle_since_mono + keep_warm_ns);
    }
    return next;
  }

  void fire_timers() {
    const int64_t now = mono_now_ns();
    const int64_t keep_warm_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.keep_warm).count();
    std::vector<worker*> expired;
    for (auto& [id, w] : workers_) {
      if (w->current && w->current->deadline_mono <= now) {
        expired.push_back(w.get());
      } else if (w->kill_at_mono && w->kill_at_mono <= now) {
        w->kill_at_mono = 0;
        kill_worker(*w);
      } else if (!w->current && !w->dying && w->idle_since_mono &&
                 w->idle_since_mono + keep_warm_ns <= now) {
        log_->debug("{}: worker {} idle for {} s, stopping", w->function, w->pid, opts_.keep_warm.count());
        kill_worker(*w);
      }
    }
    for (worker* w : expired) {
      auto ms = w->current->w.timeout.count();
      read_proc_usage(*w, w->current->out);  // what it used until now is billed too
      kill_worker(*w);
      finish(*w, proto::Status::timeout, "timed out after " + std::to_string(ms) + " ms");
    }
  }

  // ---- starting work ----

  void start(work&& wk) {
    if (draining_) {
      complete(std::move(wk), proto::Status::rejected, "node is draining");
      return;
    }
    if (!wk.function) {
      complete(std::move(wk), proto::Status::error, "no function spec");
      return;
    }
    const auto& spec = wk.function->spec();
    const auto* inv = proto::verified<proto::Invocation>(wk.invocation);
    if (!inv) {
      complete(std::move(wk), proto::Status::error, "malformed invocation");
      return;
    }
    switch (spec.runtime()) {
      case proto::Runtime::python3:
      case proto::Runtime::native:
        start_warm(std::move(wk));
        return;
      case proto::Runtime::exec: {
        std::span<const uint8_t> payload = proto::bytes(inv->payload());
        worker* w = spawn(wk, false, inv);
        if (!w) return;  // spawn() completed the work
        attach(*w, std::move(wk), false);
        w->current->payload = payload;
        if (!payload.empty()) write_stdin(*w);
        else unwatch(w->in);
        return;
      }
      default:
        complete(std::move(wk), proto::Status::error,
                 std::string("runtime ") + proto::EnumNameRuntime(spec.runtime()) + " is not supported on this node");
        return;
    }
  }

  static std::string key_of(const proto::FunctionSpec& spec) {
    std::string key(proto::view(spec.tenant()));
    key += '/';
    key += proto::view(spec.name());
    key += '/';
    key += proto::view(spec.version());
    return key;
  }

  void start_warm(work&& wk) {
    std::string key = key_of(wk.function->spec());
    for (;;) {
      worker* w = nullptr;
      bool cold = false;
      if (auto it = idle_.find(key); it != idle_.end() && !it->second.empty()) {
        w = it->second.back();
        it->second.pop_back();
      } else {
        w = spawn(wk, true, nullptr);
        if (!w) return;
        w->pool_key = key;
        cold = true;
      }
      attach(*w, std::move(wk), cold);
      if (send_more(*w) || w->current->sent > 0 || cold) return;
      // An idle worker that died unnoticed: take the work back and try another one.
      wk = std::move(w->current->w);
      w->current.reset();
      --busy_;
    }
  }

  void attach(worker& w, work&& wk, bool cold) {
    w.current.emplace();
    job& j = *w.current;
    j.w = std::move(wk);
    j.out.cold_start = cold;
    j.out.worker_pid = w.pid;
    j.out.started_ns = unix_now_ns();
    const int64_t now = mono_now_ns();
    j.sent_mono = now;
    j.deadline_mono = now + std::chrono::duration_cast<std::chrono::nanoseconds>(j.w.timeout).count();
    if (w.runtime != proto::Runtime::exec && !cold && w.reply_ewma_ns < spin_ns_)
      spin_until_mono_ = std::max(spin_until_mono_, now + spin_ns_);
    store_le32(j.header, uint32_t(j.w.invocation.size()));
    // "5" resets the worker's VmHWM to its current RSS: the peak read at the end is this
    // invocation's.
    if (w.clear_refs_fd && !cold) [[maybe_unused]] auto r = ::pwrite(w.clear_refs_fd.get(), "5", 1, 0);
    w.idle_since_mono = 0;
    ++busy_;
  }

  // Starts a process for wk; on failure completes wk and returns nullptr.
  worker* spawn(work& wk, bool warm, const proto::Invocation* inv) {
    const auto& spec = wk.function->spec();
    auto w = std::make_unique<worker>();
    w->id = next_id_++;
    w->runtime = spec.runtime();
    w->function = std::string(proto::view(spec.name()));

    c_strings argv, envp;
    std::string handler(proto::view(spec.handler()));
    std::string path;
    if (spec.runtime() == proto::Runtime::python3) {
      path = opts_.python.string();
      argv.owned = {path, "-u", opts_.python_shim.string(), handler};
    } else {
      // native / exec: a program (relative to the code folder, or absolute) and its words.
      std::vector<std::string> words;
      size_t pos = 0;
      while (pos < handler.size()) {
        size_t b = handler.find_first_not_of(" \t", pos);
        if (b == std::string::npos) break;
        size_t e = handler.find_first_of(" \t", b);
        if (e == std::string::npos) e = handler.size();
        words.push_back(handler.substr(b, e - b));
        pos = e;
      }
      if (words.empty()) {
        complete(std::move(wk), proto::Status::error, "the function has no handler program");
        return nullptr;
      }
      std::filesystem::path prog(words[0]);
      path = prog.is_absolute() ? prog.string() : (wk.code_dir / prog).string();
      argv.owned = std::move(words);
      argv.owned[0] = path;
    }

    // Each name once: the spec's env may override the defaults, never the FNMESH_* names.
    auto add = [&](std::string_view k, std::string_view v) {
      std::string s(k);
      s += '=';
      std::erase_if(envp.owned, [&](const std::string& e) { return e.starts_with(s); });
      s += v;
      envp.owned.push_back(std::move(s));
    };
    add("PATH", "/usr/local/bin:/usr/bin:/bin");
    add("LANG", "C.UTF-8");
    add("HOME", "/tmp");
    if (auto* env = spec.env()) {
      for (const auto* kv : *env) {
        if (kv && kv->key() && kv->key()->size() > 0) add(proto::view(kv->key()), proto::view(kv->value()));
      }
    }
    add("FNMESH_FUNCTION", proto::view(spec.name()));
    add("FNMESH_TENANT", proto::view(spec.tenant()));
    add("FNMESH_VERSION", proto::view(spec.version()));
    add("FNMESH_HANDLER", handler);
    add("FNMESH_RUNTIME", proto::EnumNameRuntime(spec.runtime()));
    add("FNMESH_MEMORY_MB", std::to_string(spec.memory_mb()));
    add("FNMESH_TIMEOUT_S", std::to_string(spec.timeout_s()));
    add("FNMESH_CODE_DIR", wk.code_dir.string());
    if (spec.runtime() == proto::Runtime::python3) {
      std::string pp = opts_.python_proto_dir.string();
      if (!pp.empty()) pp += ':';
      pp += wk.code_dir.string();
      add("PYTHONPATH", pp);
      add("PYTHONDONTWRITEBYTECODE", "1");
      add("PYTHONUNBUFFERED", "1");
    }
    if (inv) {
      add("FNMESH_INVOCATION_ID", proto::view(inv->id()));
      add("FNMESH_DEADLINE_NS", std::to_string(inv->deadline_ns()));
      add("FNMESH_ATTEMPT", std::to_string(inv->attempt()));
      add("FNMESH_TRIGGER", proto::EnumNameTrigger(inv->trigger()));
      add("FNMESH_SOURCE", proto::view(inv->source()));
      add("FNMESH_CONTENT_TYPE", proto::view(inv->content_type()));
    }

    // Descriptors: ours non-blocking, the child's blocking; all close-on-exec.
    unique_fd child_sock, child_out, child_err, child_in;
    int sp[2];
    if (warm) {
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) return spawn_failed(wk, "socketpair");
      w->sock.reset(sp[0]);
      child_sock.reset(sp[1]);
      set_nonblocking(w->sock.get());
    }
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return spawn_failed(wk, "pipe2");
    w->out.reset(p[0]);
    child_out.reset(p[1]);
    if (::pipe2(p, O_CLOEXEC) != 0) return spawn_failed(wk, "pipe2");
    w->err.reset(p[0]);
    child_err.reset(p[1]);
    if (!warm) {
      if (::pipe2(p, O_CLOEXEC) != 0) return spawn_failed(wk, "pipe2");
      child_in.reset(p[0]);
      w->in.reset(p[1]);
      set_nonblocking(w->in.get());
      ::fcntl(w->in.get(), F_SETPIPE_SZ, 1 << 20);
      ::fcntl(w->out.get(), F_SETPIPE_SZ, 1 << 20);
    }
    set_nonblocking(w->out.get());
    set_nonblocking(w->err.get());

    std::string cwd = wk.code_dir.string();
    spawn_plan plan;
    plan.path = path.c_str();
    plan.argv = argv.get();
    plan.envp = envp.get();
    plan.cwd = cwd.empty() ? nullptr : cwd.c_str();
    plan.fds[0] = warm ? dev_null_.get() : child_in.get();
    plan.fds[1] = child_out.get();
    plan.fds[2] = child_err.get();
    plan.fds[3] = warm ? child_sock.get() : dev_null_.get();
    plan.parent = self_pid_;

    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    pid_t pid = ::clone(spawn_child, spawn_stack_.get() + spawn_stack_bytes,
                        CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &plan, &pidfd);
    int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) {
      errno = clone_errno;
      return spawn_failed(wk, "clone");
    }
    w->pid = pid;
    w->pidfd.reset(pidfd);
    if (plan.error != 0) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      complete(std::move(wk), proto::Status::error,
               "cannot start " + path + " in " + cwd + ": " + plan.step + ": " + std::strerror(plan.error));
      return nullptr;
    }

    std::string proc = "/proc/" + std::to_string(pid);
    w->stat_fd.reset(::open((proc + "/stat").c_str(), O_RDONLY | O_CLOEXEC));
    w->status_fd.reset(::open((proc + "/status").c_str(), O_RDONLY | O_CLOEXEC));
    if (warm) {
      w->clear_refs_fd.reset(::open((proc + "/clear_refs").c_str(), O_WRONLY | O_CLOEXEC));
      w->sock_open = true;
      watch(*w, w->sock, fd_role::sock, EPOLLIN);
      w->spec = wk.function;
      count_warm(spec, +1);
    } else {
      watch(*w, w->in, fd_role::in, EPOLLOUT);
    }
    watch(*w, w->out, fd_role::out, EPOLLIN);
    watch(*w, w->err, fd_role::err, EPOLLIN);
    watch(*w, w->pidfd, fd_role::pidfd, EPOLLIN);
    log_->debug("{}: started {} worker pid {}", w->function, proto::EnumNameRuntime(w->runtime), pid);
    worker* raw = w.get();
    workers_.emplace(raw->id, std::move(w));
    return raw;
  }

  worker* spawn_failed(work& wk, const char* what) {
    complete(std::move(wk), proto::Status::error,
             std::string("cannot start a worker: ") + what + ": " + std::strerror(errno));
    return nullptr;
  }

  void watch(worker& w, const unique_fd& fd, fd_role role, uint32_t events) {
    epoll_event ev{.events = events, .data = {.u64 = tag(w.id, role)}};
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0)
      log_->error("epoll_ctl add: {}", std::strerror(errno));
  }

  void modify(worker& w, const unique_fd& fd, fd_role role, uint32_t events) {
    epoll_event ev{.events = events, .data = {.u64 = tag(w.id, role)}};
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd.get(), &ev);
  }

  void unwatch(unique_fd& fd) {
    if (!fd) return;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd.get(), nullptr);
    fd.reset();
  }

  // ---- warm worker protocol ----

  // Writes what is left of the current frame; false if the socket is gone.
  bool send_more(worker& w) {
    if (!w.current || !w.sock_open) return false;
    job& j = *w.current;
    const size_t total = frame_header_bytes + j.w.invocation.size();
    while (j.sent < total) {
      iovec iov[2];
      int n = 0;
      if (j.sent < frame_header_bytes) {
        iov[n++] = {j.header + j.sent, frame_header_bytes - j.sent};
        iov[n++] = {j.w.invocation.data(), j.w.invocation.size()};
      } else {
        size_t off = j.sent - frame_header_bytes;
        iov[n++] = {j.w.invocation.data() + off, j.w.invocation.size() - off};
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = size_t(n);
      ssize_t r = ::sendmsg(w.sock.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          if (!w.want_out) {
            w.want_out = true;
            modify(w, w.sock, fd_role::sock, EPOLLIN | EPOLLOUT);
          }
          return true;
        }
        sock_closed(w);
        return false;
      }
      j.sent += size_t(r);
    }
    if (w.want_out) {
      w.want_out = false;
      modify(w, w.sock, fd_role::sock, EPOLLIN);
    }
    return true;
  }

  void read_sock(worker& w) {
    for (;;) {
      if (w.rbuf.size() - w.rlen < read_chunk / 4) w.rbuf.resize(std::max(w.rbuf.size() * 2, read_chunk));
      const size_t space = w.rbuf.size() - w.rlen;
      ssize_t r = ::recv(w.sock.get(), w.rbuf.data() + w.rlen, space, MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        sock_closed(w);
        return;
      }
      if (r == 0) {
        sock_closed(w);
        return;
      }
      w.rlen += size_t(r);
      if (!parse_frames(w)) return;
      if (size_t(r) < space) break;  // a short read: nothing more waiting
    }
  }

  // Handles every complete frame in w.rbuf; false if the worker was dropped.
  bool parse_frames(worker& w) {
    size_t pos = 0;
    while (w.rlen - pos >= frame_header_bytes) {
      uint32_t len = load_le32(w.rbuf.data() + pos);
      if (len > proto::max_message_bytes) {
        protocol_error(w, "frame of " + std::to_string(len) + " bytes");
        return false;
      }
      if (w.rlen - pos < frame_header_bytes + len) {
        if (w.rbuf.size() < frame_header_bytes + len) {
          std::memmove(w.rbuf.data(), w.rbuf.data() + pos, w.rlen - pos);
          w.rlen -= pos;
          pos = 0;
          w.rbuf.resize(frame_header_bytes + len + read_chunk);
        }
        break;
      }
      std::span<const uint8_t> frame(w.rbuf.data() + pos + frame_header_bytes, len);
      pos += frame_header_bytes + len;
      if (!on_result(w, frame)) return false;
    }
    if (pos > 0) {
      std::memmove(w.rbuf.data(), w.rbuf.data() + pos, w.rlen - pos);
      w.rlen -= pos;
    }
    if (w.rlen == 0 && w.rbuf.size() > (1u << 20)) {
      w.rbuf.resize(read_chunk);
      w.rbuf.shrink_to_fit();
    }
    return true;
  }

  bool on_result(worker& w, std::span<const uint8_t> frame) {
    const auto* res = proto::verified<proto::Result>(frame);
    if (!res) {
      protocol_error(w, "a Result that fails verification");
      return false;
    }
    if (!w.current) {
      protocol_error(w, "a Result while idle");
      return false;
    }
    job& j = *w.current;
    if (!j.out.cold_start) {
      // How fast this worker answers decides whether the loop spins for it next time.
      const int64_t took = mono_now_ns() - j.sent_mono;
      w.reply_ewma_ns = w.reply_ewma_ns ? (w.reply_ewma_ns * 7 + took) / 8 : took;
    }
    auto out = proto::bytes(res->output());
    j.out.output.assign(out.begin(), out.end());
    j.out.content_type = std::string(proto::view(res->content_type()));
    auto status = res->status();
    if (status > proto::Status::MAX) status = proto::Status::error;
    read_proc_usage(w, j.out);
    finish(w, status, std::string(proto::view(res->error())));
    return true;
  }

  void protocol_error(worker& w, const std::string& what) {
    log_->warn("{}: worker {} sent {}; stopping it", w.function, w.pid, what);
    kill_worker(w);
    if (w.current) finish(w, proto::Status::crashed, "runtime protocol error: " + what);
  }

  void sock_closed(worker& w) {
    if (!w.sock_open) return;
    w.sock_open = false;
    unwatch(w.sock);
    w.dying = true;
    remove_idle(w);
    // The process is most likely exiting: reap() reports it. If it lingers, kill it.
    if (!w.kill_at_mono) w.kill_at_mono = mono_now_ns() + eof_grace_ns;
  }

  void read_proc_usage(worker& w, outcome& out) {
    char buf[2048];
    if (w.stat_fd) {
      std::string_view s = pread_text(w.stat_fd.get(), buf, sizeof buf);
      size_t close = s.rfind(')');
      if (close != std::string_view::npos) {
        s.remove_prefix(close + 1);
        // After the command: state(3) ... utime(14) stime(15).
        int64_t vals[2] = {0, 0};
        int field = 2, got = 0;
        size_t i = 0;
        while (i < s.size() && got < 2) {
          while (i < s.size() && s[i] == ' ') ++i;
          size_t b = i;
          while (i < s.size() && s[i] != ' ') ++i;
          ++field;
          if (field == 14 || field == 15) std::from_chars(s.data() + b, s.data() + i, vals[got++]);
        }
        int64_t user = vals[0] * tick_ns_, sys = vals[1] * tick_ns_;
        out.cpu_user_ns = std::max<int64_t>(0, user - w.cpu_user_ns);
        out.cpu_system_ns = std::max<int64_t>(0, sys - w.cpu_system_ns);
        w.cpu_user_ns = user;
        w.cpu_system_ns = sys;
      }
    }
    if (w.status_fd) {
      std::string_view s = pread_text(w.status_fd.get(), buf, sizeof buf);
      size_t at = s.find("VmHWM:");
      if (at != std::string_view::npos) {
        size_t b = s.find_first_of("0123456789", at);
        int64_t kb = 0;
        if (b != std::string_view::npos) std::from_chars(s.data() + b, s.data() + s.size(), kb);
        out.peak_memory_bytes = kb * 1024;
      }
    }
  }

  // ---- exec processes ----

  void write_stdin(worker& w) {
    if (!w.in) return;
    if (!w.current) {
      unwatch(w.in);
      return;
    }
    job& j = *w.current;
    while (j.sent < j.payload.size()) {
      ssize_t r = ::write(w.in.get(), j.payload.data() + j.sent, j.payload.size() - j.sent);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;  // EPOLLOUT brings us back
        break;                        // EPIPE: the program does not read all of it
      }
      j.sent += size_t(r);
    }
    unwatch(w.in);
  }

  void read_pipe(worker& w, unique_fd& fd, bool is_err) {
    if (!fd) return;
    const bool collect = !is_err && w.runtime == proto::Runtime::exec;
    for (;;) {
      uint8_t* dst = scratch_.data();
      size_t cap = scratch_.size();
      if (collect) {
        size_t old = w.stdout_buf.size();
        w.stdout_buf.resize(old + read_chunk);
        dst = w.stdout_buf.data() + old;
        cap = read_chunk;
      }
      ssize_t r = ::read(fd.get(), dst, cap);
      if (collect) w.stdout_buf.resize(w.stdout_buf.size() - cap + size_t(std::max<ssize_t>(r, 0)));
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        unwatch(fd);
        return;
      }
      if (r == 0) {
        unwatch(fd);
        return;
      }
      if (collect) {
        if (w.stdout_buf.size() > proto::max_message_bytes) {
          w.stdout_over = true;
          w.stdout_buf.resize(proto::max_message_bytes);
        }
      } else {
        std::string_view text(reinterpret_cast<const char*>(dst), size_t(r));
        if (is_err) {
          w.err_tail.append(text);
          if (w.err_tail.size() > 2 * opts_.stderr_tail_bytes)
            w.err_tail.erase(0, w.err_tail.size() - opts_.stderr_tail_bytes);
        }
        log_lines(w, is_err ? w.err_line : w.out_line, text, is_err);
      }
      if (size_t(r) < cap) return;
    }
  }

  void log_lines(worker& w, std::string& partial, std::string_view text, bool is_err) {
    partial.append(text);
    size_t start = 0;
    for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1)
      log_->info("{}[{}] {}: {}", w.function, w.pid, is_err ? "stderr" : "stdout",
                 std::string_view(partial).substr(start, nl - start));
    partial.erase(0, start);
    if (partial.size() > 16 * 1024) {
      log_->info("{}[{}] {}: {}", w.function, w.pid, is_err ? "stderr" : "stdout", partial);
      partial.clear();
    }
  }

  std::string tail(const worker& w) const {
    std::string_view t(w.err_tail);
    if (t.size() > opts_.stderr_tail_bytes) t.remove_prefix(t.size() - opts_.stderr_tail_bytes);
    return std::string(t);
  }

  // ---- ends ----

  void reap(worker& w) {
    int status = 0;
    rusage ru{};
    pid_t r = ::wait4(w.pid, &status, WNOHANG, &ru);
    if (r == 0) return;
    if (r < 0) {
      // Someone else in this process reaped it (waitpid(-1)): the status is lost.
      log_->warn("{}: worker {} was reaped elsewhere: {}", w.function, w.pid, std::strerror(errno));
      status = W_EXITCODE(0, SIGKILL);
    }
    unwatch(w.pidfd);
    // Whatever the process wrote before it ended is still in the pipes.
    read_pipe(w, w.out, false);
    read_pipe(w, w.err, true);
    if (w.current) {
      job& j = *w.current;
      j.out.cpu_user_ns = std::max<int64_t>(0, timeval_ns(ru.ru_utime) - w.cpu_user_ns);
      j.out.cpu_system_ns = std::max<int64_t>(0, timeval_ns(ru.ru_stime) - w.cpu_system_ns);
      j.out.peak_memory_bytes = int64_t(ru.ru_maxrss) * 1024;
      if (w.runtime == proto::Runtime::exec) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !w.stdout_over) {
          j.out.output = std::move(w.stdout_buf);
          finish(w, proto::Status::ok, {});
        } else if (w.stdout_over) {
          finish(w, proto::Status::error,
                 "output over " + std::to_string(proto::max_message_bytes) + " bytes");
        } else {
          std::string t = tail(w);
          finish(w, WIFSIGNALED(status) ? proto::Status::crashed : proto::Status::error,
                 "program " + exit_text(status) + (t.empty() ? "" : "\n" + t));
        }
      } else {
        std::string t = tail(w);
        finish(w, proto::Status::crashed, "worker " + exit_text(status) + (t.empty() ? "" : "\n" + t));
      }
    } else if (!w.dying) {
      log_->warn("{}: idle worker {} {}", w.function, w.pid, exit_text(status));
    }
    drop(w);
  }

  void kill_worker(worker& w) {
    if (w.pid > 0 && w.pidfd) {
      ::kill(-w.pid, SIGKILL);
      ::kill(w.pid, SIGKILL);
    }
    w.dying = true;
    w.kill_at_mono = 0;
    remove_idle(w);
  }

  void remove_idle(worker& w) {
    if (w.pool_key.empty()) return;
    auto it = idle_.find(w.pool_key);
    if (it == idle_.end()) return;
    std::erase(it->second, &w);
    if (it->second.empty()) idle_.erase(it);
  }

  void drop(worker& w) {
    remove_idle(w);
    if (w.runtime != proto::Runtime::exec && w.spec) count_warm(w.spec->spec(), -1);
    unwatch(w.sock);
    unwatch(w.out);
    unwatch(w.err);
    unwatch(w.in);
    unwatch(w.pidfd);
    workers_.erase(w.id);
    check_drained();
  }

  // Completes the worker's current job; an ok warm worker goes back to the pool.
  void finish(worker& w, proto::Status status, std::string error) {
    job j = std::move(*w.current);
    w.current.reset();
    --busy_;
    j.out.status = status;
    j.out.error = std::move(error);
    j.out.finished_ns = unix_now_ns();
    if (w.runtime != proto::Runtime::exec && !w.dying && w.sock_open) {
      if (draining_) {
        kill_worker(w);
      } else {
        w.idle_since_mono = mono_now_ns();
        idle_[w.pool_key].push_back(&w);
      }
    }
    if (j.w.done) j.w.done(std::move(j.out));
    check_drained();
  }

  void complete(work&& wk, proto::Status status, std::string error) {
    outcome out;
    out.status = status;
    out.error = std::move(error);
    out.started_ns = out.finished_ns = unix_now_ns();
    if (wk.done) wk.done(std::move(out));
  }

  // Drained: nothing runs and every worker is killed and reaped.
  void check_drained() {
    if (!draining_ || busy_ > 0) return;
    for (auto& [id, w] : workers_)
      if (!w->dying) kill_worker(*w);
    if (!workers_.empty()) return;  // reap() calls again as each one goes
    for (auto& p : drain_waiters_) p.set_value();
    drain_waiters_.clear();
  }

  void shut_down() {
    std::vector<work> left;
    {
      std::lock_guard lock(mutex_);
      left.swap(queued_);
    }
    for (auto& w : left) complete(std::move(w), proto::Status::rejected, "node is stopping");
    for (auto& [id, w] : workers_) {
      if (w->pid > 0) {
        ::kill(-w->pid, SIGKILL);
        ::kill(w->pid, SIGKILL);
      }
    }
    for (auto& [id, w] : workers_) {
      if (w->pid > 0) ::waitpid(w->pid, nullptr, 0);
      if (w->current) {
        job j = std::move(*w->current);
        w->current.reset();
        j.out.status = proto::Status::crashed;
        j.out.error = "node stopped while the invocation ran";
        j.out.finished_ns = unix_now_ns();
        if (j.w.done) j.w.done(std::move(j.out));
      }
    }
    workers_.clear();
    idle_.clear();
    {
      std::lock_guard lock(warm_mutex_);
      warm_by_function_.clear();
    }
    warm_.store(0);
    for (auto& p : drain_waiters_) p.set_value();
    drain_waiters_.clear();
  }
};

executor::executor(executor_options opts) : impl_(std::make_unique<impl>(std::move(opts))) {}

executor::~executor() = default;

void executor::run(work w) {
  {
    std::lock_guard lock(impl_->mutex_);
    impl_->queued_.push_back(std::move(w));
  }
  impl_->wake();
}

void executor::post(std::function<void()> fn) {
  {
    std::lock_guard lock(impl_->mutex_);
    impl_->posted_.push_back(std::move(fn));
  }
  impl_->wake();
}

void executor::drain() {
  auto done = std::make_shared<std::promise<void>>();
  auto f = done->get_future();
  post([this, done] {
    impl_->draining_ = true;
    impl_->drain_waiters_.push_back(std::move(*done));
    impl_->check_drained();
  });
  f.wait();
}

size_t executor::warm_workers() const noexcept { return impl_->warm_.load(std::memory_order_relaxed); }

std::vector<std::pair<std::string, size_t>> executor::warm_by_function() const {
  std::lock_guard lock(impl_->warm_mutex_);
  return {impl_->warm_by_function_.begin(), impl_->warm_by_function_.end()};
}

}  // namespace fnmesh::node
