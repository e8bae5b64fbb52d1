#include "node/sandbox/executor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_map>

#include <oneapi/tbb/concurrent_hash_map.h>
#include <oneapi/tbb/concurrent_unordered_map.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "node/bpf/cpu_meter.h"
#include "node/bpf/net_guard.h"

namespace fnmesh::node {
namespace {

constexpr size_t frame_header_bytes = 4;
constexpr size_t read_chunk = 64 * 1024;
// A worker that closed its end of the socket gets this long to exit on its own.
constexpr int64_t eof_grace_ns = 1'000'000'000;
// A sandbox cgroup still busy after its process was reaped is removed on the next try.
constexpr int64_t cgroup_retry_ns = 50'000'000;
// A new sandbox runs with launcher::start_cpus until its first invocation ends, or this long.
constexpr int64_t start_boost_ns = 2'000'000'000;

enum class fd_role : uint64_t { sock = 0, out = 1, err = 2, pidfd = 3, in = 4, meter = 6, wake = 7 };

uint64_t tag(uint64_t worker_id, fd_role role) { return (worker_id << 3) | uint64_t(role); }

std::runtime_error sys_failure(const char* what) {
  return std::runtime_error(std::string("executor: ") + what + ": " + std::strerror(errno));
}

// The bytes received and sent on the loopback of `pid`'s network namespace
// (/proc/<pid>/net/dev), or nothing when it cannot be read.
std::optional<net_traffic> loopback_traffic(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/net/dev", int(pid));
  unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  char text[4096];
  const ssize_t n = ::read(fd.get(), text, sizeof text - 1);
  if (n <= 0) return std::nullopt;
  text[n] = '\0';
  const char* lo = std::strstr(text, " lo:");
  unsigned long long v[9];
  if (!lo || std::sscanf(lo + 4, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                         &v[5], &v[6], &v[7], &v[8]) != 9)
    return std::nullopt;
  return net_traffic{.rx_bytes = int64_t(v[0]), .tx_bytes = int64_t(v[8])};
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

// The signal that ended a sandbox's runtime: its init exits with 128 + the signal.
int signal_of(int status) {
  if (WIFSIGNALED(status)) return WTERMSIG(status);
  if (WIFEXITED(status) && WEXITSTATUS(status) > 128 && WEXITSTATUS(status) < 128 + NSIG) return WEXITSTATUS(status) - 128;
  return 0;
}

std::string exit_text(int status) {
  if (int sig = signal_of(status)) {
    const char* name = ::sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended with status " + std::to_string(status);
}

}  // namespace

struct executor::impl {
  struct job {
    work w;
    std::string invocation_id;       // for log lines
    outcome out;
    int64_t deadline_mono = 0;
    int64_t sent_mono = 0;
    size_t sent = 0;                 // frame bytes written so far (header included)
    uint8_t header[frame_header_bytes] = {};
    std::span<const uint8_t> payload;  // exec: what goes to stdin
  };

  // One sandbox: a warm runtime (python3, nodejs, native) or a one-shot exec program.
  // Loop thread only; while `starting`, the arena builds it and nothing but the job is set.
  struct worker {
    uint64_t id = 0;
    std::string name;                // sandbox name, also its cgroup directory
    proto::Runtime runtime = proto::Runtime::python3;
    std::string pool_key;
    std::string function;            // for log lines
    broker::function_ptr spec;       // the spec it was started for
    int64_t memory_bytes = 0;        // its memory limit, counted against the budget
    bool starting = false;
    pid_t pid = 0;
    unique_fd pidfd, sock, out, err, in;
    sandbox_cgroup cgroup;
    std::optional<job> current;
    bool sock_open = false;
    bool want_out = false;           // EPOLLOUT registered on sock / in
    bool dying = false;              // killed or exiting; never handed work again
    int64_t kill_at_mono = 0;        // 0 = not scheduled
    int64_t idle_since_mono = 0;
    int64_t boost_until_mono = 0;    // 0 = the function's own CPU share is in force
    cpu_time cpu;                    // the cgroup's CPU time at the end of the last invocation
    uint64_t cgroup_id = 0;          // watched by the meter (0: no meter)
    int64_t meter_ns = 0;            // the meter's figure at the end of the last invocation
    uint64_t net_id = 0;             // watched by the net guard (0: none)
    net_traffic net;                 // its figures at the end of the last invocation
    int64_t budget_ns = 0;           // the running invocation's CPU budget, armed in the kernel
    int64_t armed_at_ns = 0;         // the meter's figure it counts from
    int64_t reply_ewma_ns = 0;       // warm round trips, smoothed
    std::vector<uint8_t> rbuf;
    size_t rlen = 0;
    std::string err_tail;
    std::string out_line, err_line;  // unfinished log lines
    std::vector<uint8_t> stdout_buf; // exec: the output
    bool stdout_over = false;
  };

  // Idle sandboxes per function version, longest idle first.
  using pool_map = tbb::concurrent_hash_map<std::string, std::vector<worker*>>;
  // Live warm sandboxes per "tenant/function": entries are never erased, so the heartbeat
  // may walk it while the loop counts.
  using count_map = tbb::concurrent_unordered_map<std::string, std::atomic<size_t>>;

  executor_options opts_;
  std::shared_ptr<spdlog::logger> log_ = logger("sandbox");
  // Null without BPF.
  std::unique_ptr<cpu_meter> meter_ = open_meter();  // before the launcher, which uses it
  launcher launcher_;
  std::unique_ptr<net_guard> net_ = open_net_guard();  // after the launcher: on its cgroups
  unique_fd epoll_, wake_;
  std::thread thread_;
  int64_t spin_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.spin).count();
  int64_t spin_until_mono_ = 0;  // loop thread: a fast reply is expected until then

  // Sandboxes start here, off the loop thread.
  tbb::task_arena arena_{int(std::max(2u, std::thread::hardware_concurrency()))};
  tbb::task_group starts_;

  std::mutex mutex_;
  std::vector<work> queued_;
  std::vector<std::function<void()>> posted_;
  bool stop_ = false;
  std::atomic<bool> wake_pending_{false};

  // The warm pool: written on the loop thread, the counts read by the heartbeat.
  pool_map idle_;
  count_map warm_by_function_;
  std::atomic<size_t> warm_{0};

  // Loop thread only.
  std::unordered_map<uint64_t, std::unique_ptr<worker>> workers_;
  std::vector<sandbox_cgroup> busy_cgroups_;  // reaped sandboxes whose cgroup is not empty yet
  int64_t cgroup_retry_mono_ = 0;
  uint64_t next_id_ = 1;
  size_t busy_ = 0;
  bool draining_ = false;
  std::vector<std::promise<void>> drain_waiters_;
  std::vector<uint8_t> scratch_ = std::vector<uint8_t>(read_chunk);

  void count_warm(const proto::FunctionSpec& spec, int delta) {
    warm_by_function_[executor::function_of(spec)].fetch_add(size_t(delta), std::memory_order_relaxed);
    warm_.fetch_add(size_t(delta), std::memory_order_relaxed);
  }

  explicit impl(executor_options opts) : opts_(std::move(opts)), launcher_(with_meter(opts_.sandboxes)) {
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) throw sys_failure("epoll_create1");
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) throw sys_failure("eventfd");
    epoll_event ev{.events = EPOLLIN, .data = {.u64 = uint64_t(fd_role::wake)}};
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) throw sys_failure("epoll_ctl");
    if (meter_) {
      epoll_event kills{.events = EPOLLIN, .data = {.u64 = uint64_t(fd_role::meter)}};
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, meter_->events_fd(), &kills) != 0) throw sys_failure("epoll_ctl");
    }
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

  // The BPF meter, or null (not built, turned off, or it does not load here: said once).
  std::unique_ptr<cpu_meter> open_meter() {
    if (!opts_.bpf) {
      log_->warn("BPF is off: CPU comes from cgroups, CPU budgets are not enforced by the kernel");
      return nullptr;
    }
    auto m = cpu_meter::open({});
    if (m) {
      log_->info("CPU is counted by the BPF meter; CPU budgets are enforced in the kernel");
      return std::move(*m);
    }
    log_->warn("the BPF meter does not load ({}): CPU comes from cgroups, budgets are not enforced",
               m.error().message());
    return nullptr;
  }

  // The BPF net guard on the launcher's cgroups, or null (said once).
  std::unique_ptr<net_guard> open_net_guard() {
    const char* without =
        "none and loopback sandboxes get a network namespace of their own (their loopback's bytes are counted), "
        "host sandboxes' bytes are not counted, functions with an allow-list are refused";
    if (!opts_.bpf) {
      log_->warn("BPF is off: {}", without);
      return nullptr;
    }
    auto g = net_guard::open({.cgroup_dir = launcher_.cgroup_v2_dir()});
    if (!g) {
      log_->warn("the BPF network guard does not load ({}): {}", g.error().message(), without);
      return nullptr;
    }
    log_->info("network traffic is counted and network policies are enforced by BPF");
    launcher_.guard_network(g->get());
    return std::move(*g);
  }

  launcher_options with_meter(launcher_options o) {
    o.meter = meter_.get();
    return o;
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
    if (role == fd_role::meter) {
      on_cpu_kills();
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

  int64_t keep_warm_ns() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.keep_warm).count();
  }

  int64_t next_timer() const {
    int64_t next = cgroup_retry_mono_;
    auto consider = [&](int64_t t) {
      if (t > 0 && (next == 0 || t < next)) next = t;
    };
    for (auto& [id, w] : workers_) {
      if (w->current) consider(w->current->deadline_mono);
      consider(w->kill_at_mono);
      consider(w->boost_until_mono);
      if (!w->current && !w->dying && w->idle_since_mono) consider(w->idle_since_mono + keep_warm_ns());
    }
    return next;
  }

  void fire_timers() {
    const int64_t now = mono_now_ns();
    std::vector<worker*> expired;
    for (auto& [id, w] : workers_) {
      if (w->boost_until_mono && w->boost_until_mono <= now) end_boost(*w);
      if (w->current && w->current->deadline_mono <= now) {
        expired.push_back(w.get());
      } else if (w->kill_at_mono && w->kill_at_mono <= now) {
        w->kill_at_mono = 0;
        kill_worker(*w);
      } else if (!w->current && !w->dying && w->idle_since_mono &&
                 w->idle_since_mono + keep_warm_ns() <= now) {
        log_->debug("{}: sandbox {} idle for {} s, stopping", w->function, w->name, opts_.keep_warm.count());
        kill_worker(*w);
      }
    }
    for (worker* w : expired) {
      auto ms = w->current->w.timeout.count();
      read_usage(*w, w->current->out);  // what it used until now is billed too
      kill_worker(*w);
      finish(*w, proto::Status::timeout, "timed out after " + std::to_string(ms) + " ms");
    }
    if (cgroup_retry_mono_ && cgroup_retry_mono_ <= now) remove_cgroups();
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
    const auto* inv = proto::verified<proto::Invocation>(wk.invocation);
    if (!inv) {
      complete(std::move(wk), proto::Status::error, "malformed invocation");
      return;
    }
    if (wk.function->spec().runtime() > proto::Runtime::MAX) {
      complete(std::move(wk), proto::Status::error, "the function's runtime is not supported on this node");
      return;
    }
    if (wk.function->spec().runtime() != proto::Runtime::exec) {
      start_warm(std::move(wk));
      return;
    }
    // exec: one sandbox per invocation, the payload on stdin, its details in the environment.
    std::vector<std::string> env = {
        "FNMESH_INVOCATION_ID=" + std::string(proto::view(inv->id())),
        "FNMESH_DEADLINE_NS=" + std::to_string(inv->deadline_ns()),
        "FNMESH_ATTEMPT=" + std::to_string(inv->attempt()),
        std::string("FNMESH_TRIGGER=") + proto::EnumNameTrigger(inv->trigger()),
        "FNMESH_SOURCE=" + std::string(proto::view(inv->source())),
        "FNMESH_CONTENT_TYPE=" + std::string(proto::view(inv->content_type())),
    };
    std::span<const uint8_t> payload = proto::bytes(inv->payload());
    worker& w = cold_start(std::move(wk), std::move(env));
    w.current->payload = payload;
  }

  static std::string key_of(const proto::FunctionSpec& spec) {
    std::string key = executor::function_of(spec);
    key += '/';
    key += proto::view(spec.version());
    return key;
  }

  worker* take_idle(const std::string& key) {
    pool_map::accessor a;
    if (!idle_.find(a, key)) return nullptr;
    worker* w = a->second.back();  // the most recently used: the others may expire
    a->second.pop_back();
    if (a->second.empty()) idle_.erase(a);
    return w;
  }

  void start_warm(work&& wk) {
    std::string key = key_of(wk.function->spec());
    while (worker* w = take_idle(key)) {
      attach(*w, std::move(wk), false);
      if (send_more(*w) || w->current->sent > 0) return;
      // An idle sandbox that died unnoticed: take the work back and try another one.
      wk = std::move(w->current->w);
      w->current.reset();
      --busy_;
    }
    cold_start(std::move(wk), {}).pool_key = key;
  }

  void attach(worker& w, work&& wk, bool cold) {
    w.current.emplace();
    job& j = *w.current;
    j.w = std::move(wk);
    j.invocation_id = proto::view(flatbuffers::GetRoot<proto::Invocation>(j.w.invocation.data())->id());  // verified in start()
    j.out.cold_start = cold;
    j.out.worker_pid = w.pid;
    j.out.sandbox = w.name;
    j.out.started_ns = unix_now_ns();
    const int64_t now = mono_now_ns();
    j.sent_mono = now;
    j.deadline_mono = now + std::chrono::duration_cast<std::chrono::nanoseconds>(j.w.timeout).count();
    if (w.runtime != proto::Runtime::exec && !cold && w.reply_ewma_ns < spin_ns_)
      spin_until_mono_ = std::max(spin_until_mono_, now + spin_ns_);
    store_le32(j.header, uint32_t(j.w.invocation.size()));
    if (!cold) {
      w.cgroup.reset_peak();  // the peak read at the end is this invocation's
      arm_budget(w);
    }
    w.idle_since_mono = 0;
    ++busy_;
  }

  // Makes room in the memory budget by stopping the longest-idle sandboxes.
  void make_room(int64_t need) {
    if (opts_.memory_budget_bytes <= 0) return;
    int64_t live = 0;
    for (auto& [id, w] : workers_)
      if (!w->dying) live += w->memory_bytes;
    while (live + need > opts_.memory_budget_bytes) {
      worker* oldest = nullptr;
      for (auto& [id, w] : workers_)
        if (!w->current && !w->dying && w->idle_since_mono &&
            (!oldest || w->idle_since_mono < oldest->idle_since_mono))
          oldest = w.get();
      if (!oldest) return;  // what runs fits: the node's capacity holds it to the budget
      log_->debug("{}: stopping idle sandbox {} to make room", oldest->function, oldest->name);
      kill_worker(*oldest);
      live -= oldest->memory_bytes;
    }
  }

  // A new sandbox for wk: started in the arena, handed its job when it runs.
  worker& cold_start(work&& wk, std::vector<std::string> env) {
    const auto& spec = wk.function->spec();
    auto owned = std::make_unique<worker>();
    worker& w = *owned;
    w.id = next_id_++;
    w.runtime = spec.runtime();
    w.function = std::string(proto::view(spec.name()));
    w.spec = wk.function;
    w.memory_bytes = int64_t(spec.memory_mb()) << 20;
    w.starting = true;
    make_room(w.memory_bytes);
    launch_request req{.function = wk.function, .code_dir = wk.code_dir, .env = std::move(env)};
    attach(w, std::move(wk), true);
    workers_.emplace(w.id, std::move(owned));
    arena_.execute([&] {
      starts_.run([this, id = w.id, req = std::move(req)] {
        auto started = std::make_shared<std::expected<launched_sandbox, std::string>>(launcher_.launch(req));
        post([this, id, started] { on_started(id, std::move(*started)); });
      });
    });
    return w;
  }

  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mutex_);
      posted_.push_back(std::move(fn));
    }
    wake();
  }

  void on_started(uint64_t id, std::expected<launched_sandbox, std::string>&& started) {
    auto it = workers_.find(id);
    if (it == workers_.end()) return;
    worker& w = *it->second;
    w.starting = false;
    if (!started) {
      log_->warn("{}: {}", w.function, started.error());
      w.dying = true;
      if (w.current) finish(w, proto::Status::error, started.error());
      drop(w);
      return;
    }
    w.pid = started->pid;
    w.pidfd = std::move(started->pidfd);
    w.sock = std::move(started->sock);
    w.out = std::move(started->out);
    w.err = std::move(started->err);
    w.in = std::move(started->in);
    w.cgroup = std::move(started->cgroup);
    w.cpu = started->cpu_at_start;
    w.name = std::move(started->name);
    w.cgroup_id = started->cgroup_id;
    w.meter_ns = started->meter_ns_at_start;
    w.net_id = started->net_id;
    w.sock_open = bool(w.sock);
    w.boost_until_mono = mono_now_ns() + start_boost_ns;
    if (w.sock) watch(w, w.sock, fd_role::sock, EPOLLIN);
    if (w.in) watch(w, w.in, fd_role::in, EPOLLOUT);
    watch(w, w.out, fd_role::out, EPOLLIN);
    watch(w, w.err, fd_role::err, EPOLLIN);
    watch(w, w.pidfd, fd_role::pidfd, EPOLLIN);
    if (w.runtime != proto::Runtime::exec) count_warm(w.spec->spec(), +1);
    log_->debug("{}: started {} sandbox {} (pid {})", w.function, proto::EnumNameRuntime(w.runtime), w.name, w.pid);
    if (w.dying) {  // timed out while starting, or the executor is draining
      kill_worker(w);
      return;
    }
    if (!w.current) return;
    w.current->out.worker_pid = w.pid;
    w.current->out.sandbox = w.name;
    arm_budget(w);
    if (w.runtime == proto::Runtime::exec) {
      if (!w.current->payload.empty()) write_stdin(w);
      else unwatch(w.in);
    } else {
      send_more(w);
    }
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
    read_usage(w, j.out);
    if (w.cgroup.oom_killed()) {
      // A process of the sandbox was killed at its memory limit: the runtime survived,
      // the invocation did not, and the sandbox is not reused.
      kill_worker(w);
      finish(w, proto::Status::out_of_memory, out_of_memory_text(w));
      return false;
    }
    finish(w, status, std::string(proto::view(res->error())));
    return true;
  }

  void protocol_error(worker& w, const std::string& what) {
    log_->warn("{}: sandbox {} sent {}; stopping it", w.function, w.name, what);
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

  // What the sandbox's cgroup used since the last invocation: every process in it.
  void read_usage(worker& w, outcome& out) {
    const cpu_time cpu = w.cgroup.cpu();
    out.cpu_user_ns = std::max<int64_t>(0, cpu.user_ns - w.cpu.user_ns);
    out.cpu_system_ns = std::max<int64_t>(0, cpu.system_ns - w.cpu.system_ns);
    w.cpu = cpu;
    out.peak_memory_bytes = w.cgroup.peak_memory_bytes();
    if (auto now = meter_ns(w)) {
      // The meter's total is exact; the cgroup's split of it into user and system is
      // sampled at ticks, so it only apportions the total.
      const int64_t total = std::max<int64_t>(0, *now - w.meter_ns);
      const int64_t sampled = out.cpu_user_ns + out.cpu_system_ns;
      out.cpu_system_ns = sampled > 0 ? int64_t(double(total) * double(out.cpu_system_ns) / double(sampled)) : 0;
      out.cpu_user_ns = total - out.cpu_system_ns;
      out.source = proto::AccountingSource::bpf;
      w.meter_ns = *now;
    }
    read_traffic(w, out);
  }

  // What the sandbox's sockets did since the last invocation. Without the net guard, a
  // sandbox with a network namespace of its own has only its loopback, whose counters are
  // its traffic (every byte it sends, it receives).
  void read_traffic(worker& w, outcome& out) {
    std::optional<net_traffic> now;
    if (w.net_id) {
      if (auto t = net_->traffic(w.net_id)) now = *t;
    } else if (const auto policy = w.spec->spec().network();
               policy == proto::NetworkPolicy::none || policy == proto::NetworkPolicy::loopback) {
      now = loopback_traffic(w.pid);
    }
    if (!now) return;
    out.net_rx_bytes = now->rx_bytes - w.net.rx_bytes;
    out.net_tx_bytes = now->tx_bytes - w.net.tx_bytes;
    out.net_refused = now->refused - w.net.refused;
    w.net = *now;
    if (out.net_refused > 0)
      log_->warn("{}: invocation {}: its network policy ({}) refused {} connect(s) or send(s)", w.function,
                 w.current ? w.current->invocation_id : std::string(), proto::EnumNameNetworkPolicy(w.spec->spec().network()),
                 out.net_refused);
  }

  // ---- CPU budgets (the BPF meter) ----

  std::optional<int64_t> meter_ns(const worker& w) const {
    if (!w.cgroup_id) return std::nullopt;
    auto ns = meter_->cpu_ns(w.cgroup_id);
    return ns ? std::optional(*ns) : std::nullopt;
  }

  // The running invocation may use its function's cpu_budget_ms, by default its timeout's
  // worth of CPU at the share it runs under (its function's, or a whole CPU while it
  // starts); past it the kernel kills it.
  void arm_budget(worker& w) {
    if (!w.cgroup_id || !w.current) return;
    const double cpus = w.boost_until_mono ? launcher::start_cpus
                                           : launcher::limits_of(w.spec->spec()).cpus;
    const auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(w.current->w.timeout).count();
    const uint32_t set_ms = w.spec->spec().cpu_budget_ms();
    w.budget_ns = set_ms ? int64_t(set_ms) * 1'000'000 : int64_t(double(timeout) * cpus);
    // From the figure read at the end of the last invocation (or when it was assigned):
    // what ran since is billed to this invocation, so it counts against its budget.
    w.armed_at_ns = w.meter_ns;
    if (w.budget_ns <= 0 || !meter_->arm(w.cgroup_id, w.budget_ns, w.armed_at_ns)) w.budget_ns = 0;
  }

  void disarm_budget(worker& w) {
    if (w.budget_ns) (void)meter_->disarm(w.cgroup_id);
    w.budget_ns = 0;
  }

  // The running invocation used its whole CPU budget (the kernel killed it).
  bool budget_spent(const worker& w) const {
    auto now = meter_ns(w);
    return w.budget_ns && now && *now - w.armed_at_ns >= w.budget_ns;
  }

  std::string cpu_limit_text(const worker& w) const {
    return "CPU limit: the invocation used its budget of " + std::to_string(w.budget_ns / 1'000'000) + " ms of CPU";
  }

  // The kernel killed processes of sandboxes past their budgets.
  void on_cpu_kills() {
    std::vector<uint64_t> killed;
    meter_->drain([&](const cpu_kill& k) { killed.push_back(k.cgroup_id); });
    for (uint64_t id : killed)
      for (auto& [wid, w] : workers_)
        if (w->cgroup_id == id && w->current && w->budget_ns) {
          read_usage(*w, w->current->out);
          kill_worker(*w);
          finish(*w, proto::Status::cpu_limit, cpu_limit_text(*w));
          break;
        }
  }

  std::string out_of_memory_text(const worker& w) const {
    std::string t = tail(w);
    return "out of memory: the function's limit is " + std::to_string(w.memory_bytes >> 20) + " MB" +
           (t.empty() ? "" : "\n" + t);
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
      log_line(w, std::string_view(partial).substr(start, nl - start), is_err);
    partial.erase(0, start);
    if (partial.size() > 16 * 1024) {
      log_line(w, partial, is_err);
      partial.clear();
    }
  }

  void log_line(const worker& w, std::string_view line, bool is_err) {
    log_->debug("{}[{}] {}: {}", w.function, w.name, is_err ? "stderr" : "stdout", line);
    if (!opts_.on_log || !w.spec) return;
    const auto& spec = w.spec->spec();
    opts_.on_log({.tenant = proto::view(spec.tenant()),
                  .function = proto::view(spec.name()),
                  .version = proto::view(spec.version()),
                  .invocation_id = w.current ? std::string_view(w.current->invocation_id) : std::string_view(),
                  .sandbox = w.name,
                  .stream = is_err ? proto::LogStream::stderr : proto::LogStream::stdout,
                  .line = line,
                  .time_ns = unix_now_ns()});
  }

  std::string tail(const worker& w) const {
    std::string_view t(w.err_tail);
    if (t.size() > opts_.stderr_tail_bytes) t.remove_prefix(t.size() - opts_.stderr_tail_bytes);
    return std::string(t);
  }

  // ---- ends ----

  void reap(worker& w) {
    int status = 0;
    pid_t r = ::wait4(w.pid, &status, WNOHANG, nullptr);
    if (r == 0) return;
    if (r < 0) {
      // Someone else in this process reaped it (waitpid(-1)): the status is lost.
      log_->warn("{}: sandbox {} was reaped elsewhere: {}", w.function, w.name, std::strerror(errno));
      status = W_EXITCODE(0, SIGKILL);
    }
    unwatch(w.pidfd);
    // Whatever the process wrote before it ended is still in the pipes.
    read_pipe(w, w.out, false);
    read_pipe(w, w.err, true);
    if (w.current) {
      job& j = *w.current;
      read_usage(w, j.out);
      std::string t = tail(w);
      if (w.cgroup.oom_killed()) {
        finish(w, proto::Status::out_of_memory, out_of_memory_text(w));
      } else if (budget_spent(w)) {
        finish(w, proto::Status::cpu_limit, cpu_limit_text(w));
      } else if (w.runtime == proto::Runtime::exec) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !w.stdout_over) {
          j.out.output = std::move(w.stdout_buf);
          finish(w, proto::Status::ok, {});
        } else if (w.stdout_over) {
          finish(w, proto::Status::error, "output over " + std::to_string(proto::max_message_bytes) + " bytes");
        } else {
          finish(w, signal_of(status) ? proto::Status::crashed : proto::Status::error,
                 "program " + exit_text(status) + (t.empty() ? "" : "\n" + t));
        }
      } else {
        finish(w, proto::Status::crashed, "runtime " + exit_text(status) + (t.empty() ? "" : "\n" + t));
      }
    } else if (!w.dying) {
      log_->warn("{}: idle sandbox {} {}", w.function, w.name, exit_text(status));
    }
    drop(w);
  }

  void kill_worker(worker& w) {
    w.dying = true;
    w.kill_at_mono = 0;
    remove_idle(w);
    if (w.starting) return;  // on_started kills it
    // The pid namespace ends with its first process; the cgroup kill reaches the rest.
    if (w.pid > 0 && w.pidfd) ::kill(w.pid, SIGKILL);
    w.cgroup.kill();
  }

  void remove_idle(worker& w) {
    if (w.pool_key.empty()) return;
    pool_map::accessor a;
    if (!idle_.find(a, w.pool_key)) return;
    std::erase(a->second, &w);
    if (a->second.empty()) idle_.erase(a);
  }

  void drop(worker& w) {
    remove_idle(w);
    if (w.runtime != proto::Runtime::exec && w.pid > 0) count_warm(w.spec->spec(), -1);
    unwatch(w.sock);
    unwatch(w.out);
    unwatch(w.err);
    unwatch(w.in);
    unwatch(w.pidfd);
    if (w.pid > 0) {
      w.cgroup.kill();
      if (!w.cgroup.remove()) {
        busy_cgroups_.push_back(std::move(w.cgroup));
        if (!cgroup_retry_mono_) cgroup_retry_mono_ = mono_now_ns() + cgroup_retry_ns;
      }
    }
    if (w.cgroup_id) (void)meter_->unwatch(w.cgroup_id);
    if (w.net_id) (void)net_->unwatch(w.net_id);
    workers_.erase(w.id);
    check_drained();
  }

  // Cgroups of reaped sandboxes that still had processes (leaving after the kill).
  void remove_cgroups() {
    std::erase_if(busy_cgroups_, [](sandbox_cgroup& cg) {
      cg.kill();
      return bool(cg.remove());
    });
    cgroup_retry_mono_ = busy_cgroups_.empty() ? 0 : mono_now_ns() + cgroup_retry_ns;
    check_drained();
  }

  // The function's own CPU share from now on: its start-up is over.
  void end_boost(worker& w) {
    w.boost_until_mono = 0;
    if (auto ok = w.cgroup.set_cpus(launcher::limits_of(w.spec->spec()).cpus); !ok)
      log_->warn("{}: sandbox {}: cannot set its CPU share: {}", w.function, w.name, ok.error().message());
  }

  // Completes the sandbox's current job; an ok warm sandbox goes back to the pool.
  void finish(worker& w, proto::Status status, std::string error) {
    if (w.boost_until_mono) end_boost(w);
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
        pool_map::accessor a;
        idle_.insert(a, w.pool_key);
        a->second.push_back(&w);
      }
    }
    const bool cold = j.out.cold_start;
    if (j.w.done) j.w.done(std::move(j.out));
    disarm_budget(w);  // after the caller has its outcome: not on its critical path
    // The spare a cold start took is made again once its first invocation is done, so
    // that making it does not take CPU from that invocation.
    if (cold && !draining_) arena_.execute([&] { starts_.run([this] { launcher_.make_spares(); }); });
    check_drained();
  }

  void complete(work&& wk, proto::Status status, std::string error) {
    outcome out;
    out.status = status;
    out.error = std::move(error);
    out.started_ns = out.finished_ns = unix_now_ns();
    if (wk.done) wk.done(std::move(out));
  }

  // Drained: nothing runs, every sandbox is killed and reaped, its cgroup removed.
  void check_drained() {
    if (!draining_ || busy_ > 0) return;
    for (auto& [id, w] : workers_)
      if (!w->dying) kill_worker(*w);
    if (!workers_.empty() || !busy_cgroups_.empty()) return;  // reap() calls again as each one goes
    for (auto& p : drain_waiters_) p.set_value();
    drain_waiters_.clear();
  }

  void shut_down() {
    // Sandboxes still starting arrive as posted work: kill those too.
    draining_ = true;
    arena_.execute([&] { starts_.wait(); });
    take_posted();
    std::vector<work> left;
    {
      std::lock_guard lock(mutex_);
      left.swap(queued_);
    }
    for (auto& w : left) complete(std::move(w), proto::Status::rejected, "node is stopping");
    for (auto& [id, w] : workers_) {
      if (w->pid > 0) ::kill(w->pid, SIGKILL);
      w->cgroup.kill();
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
      (void)w->cgroup.remove();
    }
    workers_.clear();
    idle_.clear();
    for (auto& [function, count] : warm_by_function_) count.store(0);
    warm_.store(0);
    for (auto& cg : busy_cgroups_) (void)cg.remove();
    busy_cgroups_.clear();
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

void executor::post(std::function<void()> fn) { impl_->post(std::move(fn)); }

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
  std::vector<std::pair<std::string, size_t>> out;
  for (const auto& [function, count] : impl_->warm_by_function_)
    if (size_t n = count.load(std::memory_order_relaxed)) out.emplace_back(function, n);
  return out;
}

std::string executor::function_of(const proto::FunctionSpec& spec) {
  std::string key(proto::view(spec.tenant()));
  key += '/';
  key += proto::view(spec.name());
  return key;
}

size_t executor::warm_of(const std::string& function) const {
  auto it = impl_->warm_by_function_.find(function);
  return it == impl_->warm_by_function_.end() ? 0 : it->second.load(std::memory_order_relaxed);
}

std::string executor::describe() const { return impl_->launcher_.describe(); }

}  // namespace fnmesh::node
