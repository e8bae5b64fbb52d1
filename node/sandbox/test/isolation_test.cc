// isolation: what a function in a real sandbox can and cannot do, as it reports it from
// inside (python probes), and what the node sees afterwards: limits turned into outcomes,
// the warm pool's reuse and reaping, and no cgroup, mount, process or descriptor left
// behind after 1,000 invocations that crash, run out of memory and time out. Root only.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "node/sandbox/cgroups.h"
#include "node/sandbox/executor.h"
#include "tests/support/function_spec.h"
#include "tests/support/privileged.h"
#include "tests/support/sandbox_files.h"
#include "tests/support/temp_dir.h"

namespace fnmesh::node {
namespace {

using test::build_dir;
using test::source_dir;

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

// One handler per probe; each reports what it saw as JSON.
constexpr const char* functions_py = R"PY(
import ctypes
import errno
import os
import socket
import time

libc = ctypes.CDLL(None, use_errno=True)

def _name(e):
    return errno.errorcode.get(e, str(e)) if e else "none"

def _call(fn, *args):
    ctypes.set_errno(0)
    return "ok" if fn(*args) == 0 else _name(ctypes.get_errno())

def _open(path):
    try:
        with open(path, "rb") as f:
            f.read(1)
        return "ok"
    except OSError as e:
        return _name(e.errno)

def secrets(event, ctx):
    try:
        root = "ok:" + ",".join(os.listdir("/root"))
    except OSError as e:
        root = _name(e.errno)
    return {"shadow": _open("/etc/shadow"), "shadow_exists": os.path.exists("/etc/shadow"),
            "init_root_shadow": _open("/proc/1/root/etc/shadow"), "bashrc": _open("/root/.bashrc"),
            "root": root}

def processes(event, ctx):
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {"pids": pids, "self": os.getpid(), "host_pid_visible": os.path.exists("/proc/%d" % event["host_pid"])}

def connect(event, ctx):
    try:
        socket.create_connection(("127.0.0.1", event["port"]), timeout=2).close()
        return {"connect": "ok"}
    except OSError as e:
        return {"connect": _name(e.errno) if e.errno else type(e).__name__}

def loopback(event, ctx):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    peer, _ = server.accept()
    client.sendall(b"ping")
    return {"echo": peer.recv(4).decode()}

def privileged(event, ctx):
    return {"mount": _call(libc.mount, b"tmpfs", b"/tmp", b"tmpfs", 0, None),
            "umount": _call(libc.umount2, b"/proc", 2),
            "ptrace_traceme": _call(libc.ptrace, 0, 0, None, None),
            "ptrace_attach": _call(libc.ptrace, 16, 1, None, None),
            "unshare_user": _call(libc.unshare, 0x10000000),
            "unshare_mount": _call(libc.unshare, 0x00020000),
            "chroot": _call(libc.chroot, b"/tmp")}

def identity(event, ctx):
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "status": {k: status.get(k) for k in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb",
                                                  "NoNewPrivs", "Seccomp")}}

_held = []

def fork_bomb(event, ctx):
    # The children wait on a pipe the parent keeps open: they stay, holding their pids.
    r, w = os.pipe()
    _held.append(w)
    forked, error = 0, None
    while forked < 10000:
        try:
            pid = os.fork()
        except OSError as e:
            error = _name(e.errno)
            break
        if pid == 0:
            try:
                os.close(w)
                os.read(r, 1)
            finally:
                os._exit(0)
        forked += 1
    return {"forked": forked, "error": error}

def hello(event, ctx):
    return {"hello": "world"}

def allocate(event, ctx):
    blocks = []
    while len(blocks) * 16 < event.get("mb", 512):
        blocks.append(bytearray(b"\x01") * (16 << 20))
    return {"mb": len(blocks) * 16}

def fill_tmp(event, ctx):
    fd = os.open("/tmp/fill", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk, written, error = b"x" * (1 << 20), 0, None
    try:
        while written < (1 << 30):
            written += os.write(fd, chunk)
    except OSError as e:
        error = e.errno
    os.close(fd)
    return {"written": written, "errno": error}

def list_tmp(event, ctx):
    return {"tmp": sorted(os.listdir("/tmp"))}

def tmp_note(event, ctx):
    try:
        with open("/tmp/note") as f:
            before = f.read()
    except FileNotFoundError:
        before = None
        with open("/tmp/note", "w") as f:
            f.write(ctx.invocation_id)
    return {"before": before, "pid": os.getpid()}

def mixed(event, ctx):
    what = event["do"]
    if what == "crash":
        os.kill(os.getpid(), 9)
    if what == "oom":
        allocate({"mb": 512}, ctx)
    if what == "sleep":
        time.sleep(5)
    if what == "raise":
        raise RuntimeError("mixed: asked to raise")
    return {"did": what}
)PY";

using test::require_privileged;

std::string text_of(const fs::path& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t lines_of(const fs::path& path) {
  auto text = text_of(path);
  return size_t(std::count(text.begin(), text.end(), '\n'));
}

broker::function_ptr make_spec(test::function_fields f) {
  f.tenant = "test";
  return test::function_record_of(f);
}

std::vector<uint8_t> make_invocation(const std::string& function, std::string_view payload) {
  static std::atomic<int> counter = 0;
  flatbuffers::FlatBufferBuilder b;
  std::vector<uint8_t> data(payload.begin(), payload.end());
  std::string id = "inv-" + std::to_string(++counter);
  auto inv = proto::CreateInvocationDirect(b, id.c_str(), "test", function.c_str(), "v1", &data,
                                           "application/json", proto::Trigger::cli);
  b.Finish(inv);
  auto bytes = proto::bytes(b);
  return {bytes.begin(), bytes.end()};
}

// What the function returned; a failure (and null) when it did not return ok.
json reported(const outcome& o) {
  if (o.status != proto::Status::ok) {
    ADD_FAILURE() << "status " << proto::EnumNameStatus(o.status) << ": " << o.error;
    return {};
  }
  auto j = json::parse(o.output.begin(), o.output.end(), nullptr, false);
  if (j.is_discarded()) ADD_FAILURE() << "not JSON: " << std::string(o.output.begin(), o.output.end());
  return j;
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// The node's cgroup directories as cgroup_tree makes them: <own>/fnmesh-<node_id> in the
// v2 tree and in each v1 hierarchy it uses. Read before any executor runs (pure v2 may
// move the process).
const cgroup_layout& own_cgroups() {
  static const cgroup_layout layout =
      parse_cgroup_layout(text_of("/proc/self/mountinfo"), text_of("/proc/self/cgroup"));
  return layout;
}

std::vector<fs::path> tree_dirs(const std::string& node_id) {
  std::vector<fs::path> dirs;
  const auto& l = own_cgroups();
  if (!l.v2_dir.empty()) dirs.push_back(fs::path(l.v2_dir) / ("fnmesh-" + node_id));
  for (const auto& h : l.v1) dirs.push_back(fs::path(h.dir) / ("fnmesh-" + node_id));
  return dirs;
}

// Sandbox cgroup directories below the node's trees, in every hierarchy.
size_t sandbox_cgroup_dirs(const std::string& node_id) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& tree : tree_dirs(node_id))
    for (const auto& e : fs::directory_iterator(tree, ec))
      if (e.is_directory()) ++n;
  return n;
}

// The test process's descendants, and how many of those are in a child pid namespace
// (a sandbox's processes). Other work on the machine does not count.
struct process_count {
  size_t descendants = 0, in_sandboxes = 0, system = 0;
};

process_count count_processes() {
  struct info {
    pid_t ppid = 0;
    bool nested = false;
  };
  std::map<pid_t, info> all;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const auto name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream f(e.path() / "status");
    info i;
    bool seen = false;
    for (std::string line; std::getline(f, line);) {
      if (line.starts_with("PPid:")) {
        i.ppid = std::stoi(line.substr(5));
        seen = true;
      }
      if (line.starts_with("NSpid:")) {
        std::istringstream ids(line.substr(6));
        int id, count = 0;
        while (ids >> id) ++count;
        i.nested = count > 1;
      }
    }
    if (seen) all[std::stoi(name)] = i;
  }
  process_count c;
  c.system = all.size();
  const pid_t self = ::getpid();
  for (const auto& [pid, i] : all) {
    pid_t up = i.ppid;
    for (int depth = 0; up > 1 && up != self && depth < 64; ++depth) {
      auto it = all.find(up);
      up = it == all.end() ? 0 : it->second.ppid;
    }
    if (up != self) continue;
    ++c.descendants;
    if (i.nested) ++c.in_sandboxes;
  }
  return c;
}

size_t open_descriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// A TCP listener on the host's 127.0.0.1, on an ephemeral port.
struct host_listener {
  unique_fd fd;
  int port = 0;

  host_listener() : fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd.get(), 8) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("host listener: " + std::string(std::strerror(errno)));
    port = ntohs(a.sin_port);
  }

  // Takes a connection that arrived within `wait`.
  bool accepted(std::chrono::milliseconds wait) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, int(wait.count())) != 1) return false;
    unique_fd conn(::accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    return bool(conn);
  }
};

class isolation_test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    code_ = std::make_unique<test::temp_dir>("fnmesh-isolation-code");
    fs::permissions(code_->path(), fs::perms(0755));  // read by the sandbox's uid
    std::ofstream(code_->path() / "functions.py") << functions_py;
    fs::permissions(code_->path() / "functions.py", fs::perms(0644));
    own_cgroups();
  }
  static void TearDownTestSuite() {
    code_.reset();
    std::error_code ec;
    fs::remove_all(staging(), ec);  // the sandboxes' base roots: plain files, no mounts
  }

  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "isolation_test needs root (FNMESH_REQUIRE_PRIVILEGED=1)";
      GTEST_SKIP() << "isolation_test needs root";
    }
  }

  // Each executor's below it: a node's staging directory is its own.
  static fs::path staging() {
    return fs::temp_directory_path() / ("fnmesh-isolation-staging-" + std::to_string(::getpid()));
  }

  static executor_options options(std::chrono::seconds keep_warm = 60s) {
    static int fixtures = 0;
    const std::string fixture = std::to_string(++fixtures);
    executor_options o;
    o.sandboxes = test::sandbox_files("isolation-test-" + std::to_string(::getpid()) + "-" + fixture, staging() / fixture);
    o.keep_warm = keep_warm;
    return o;
  }

  // The fixture's executor, started on first use.
  executor& exec() {
    if (!exec_) exec_ = std::make_unique<executor>(options());
    return *exec_;
  }

  static outcome invoke(executor& e, const broker::function_ptr& fn, const json& event,
                        std::chrono::milliseconds timeout = 10s) {
    auto p = std::make_shared<std::promise<outcome>>();
    auto f = p->get_future();
    e.run(work{.function = fn,
               .code_dir = code_->path(),
               .invocation = make_invocation(std::string(proto::view(fn->spec().name())), event.dump()),
               .timeout = timeout,
               .done = [p](outcome&& o) { p->set_value(std::move(o)); }});
    if (f.wait_for(timeout + 20s) != std::future_status::ready) {
      ADD_FAILURE() << "no outcome 20 s past the timeout";
      return {};
    }
    return f.get();
  }
  outcome invoke(const broker::function_ptr& fn, const json& event = json::object(),
                 std::chrono::milliseconds timeout = 10s) {
    return invoke(exec(), fn, event, timeout);
  }

  static inline std::unique_ptr<test::temp_dir> code_;
  std::unique_ptr<executor> exec_;
};

TEST_F(isolation_test, cannot_read_host_secrets) {
  auto r = reported(invoke(make_spec({.name = "secrets", .handler = "functions.secrets"})));
  ASSERT_FALSE(r.is_null());
  for (const char* key : {"shadow", "init_root_shadow", "bashrc", "root"})
    EXPECT_TRUE(r[key] == "ENOENT" || r[key] == "EACCES") << key << ": " << r.dump();
  // Not in the sandbox at all (an unreadable one would be EACCES above).
  EXPECT_EQ(r["shadow_exists"], false) << r.dump();
}

TEST_F(isolation_test, sees_only_its_own_processes) {
  auto r = reported(invoke(make_spec({.name = "processes", .handler = "functions.processes"}),
                           {{"host_pid", ::getpid()}}));
  ASSERT_FALSE(r.is_null());
  auto pids = r["pids"].get<std::vector<int>>();
  EXPECT_LE(pids.size(), 3u) << r.dump();
  EXPECT_NE(std::find(pids.begin(), pids.end(), 1), pids.end()) << "the sandbox's init: " << r.dump();
  EXPECT_NE(std::find(pids.begin(), pids.end(), r["self"].get<int>()), pids.end()) << r.dump();
  EXPECT_NE(r["self"], 1);
  EXPECT_EQ(std::find(pids.begin(), pids.end(), ::getpid()), pids.end()) << r.dump();
  EXPECT_EQ(r["host_pid_visible"], false) << r.dump();
}

// none: a network namespace of its own, where the BPF net guard also refuses every connect;
// loopback: its own loopback only.
TEST_F(isolation_test, network_none_reaches_nothing_and_loopback_only_its_own) {
  host_listener host;
  auto none = make_spec({.name = "connect", .handler = "functions.connect"});
  auto r = reported(invoke(none, {{"port", host.port}}));
#ifdef FNMESH_HAVE_BPF
  EXPECT_EQ(r["connect"], "EPERM") << r.dump();
#else
  EXPECT_EQ(r["connect"], "ECONNREFUSED") << r.dump();
#endif
  EXPECT_FALSE(host.accepted(0ms)) << "a connection from a sandbox without network reached the host";

  auto loopback = make_spec({.name = "loopback", .handler = "functions.loopback", .network = proto::NetworkPolicy::loopback});
  auto own = reported(invoke(loopback));
  EXPECT_EQ(own["echo"], "ping") << own.dump();
  auto to_host = reported(invoke(make_spec({.name = "connect-loopback", .handler = "functions.connect",
                                            .network = proto::NetworkPolicy::loopback}),
                                 {{"port", host.port}}));
  EXPECT_NE(to_host["connect"], "ok") << to_host.dump();
  EXPECT_FALSE(host.accepted(0ms)) << "a loopback sandbox reached the host's loopback";

  auto with_host = make_spec({.name = "connect-host", .handler = "functions.connect",
                              .network = proto::NetworkPolicy::host});
  auto h = reported(invoke(with_host, {{"port", host.port}}));
  EXPECT_EQ(h["connect"], "ok") << h.dump();
  EXPECT_TRUE(host.accepted(1s)) << "the host listener saw no connection";
}

TEST_F(isolation_test, cannot_mount_ptrace_or_unshare) {
  auto r = reported(invoke(make_spec({.name = "privileged", .handler = "functions.privileged"})));
  ASSERT_FALSE(r.is_null());
  for (const char* key :
       {"mount", "umount", "ptrace_traceme", "ptrace_attach", "unshare_user", "unshare_mount", "chroot"})
    EXPECT_EQ(r[key], "EPERM") << key << ": " << r.dump();
}

TEST_F(isolation_test, runs_unprivileged) {
  auto r = reported(invoke(make_spec({.name = "identity", .handler = "functions.identity"})));
  ASSERT_FALSE(r.is_null());
  EXPECT_EQ(r["uid"], 1000);
  EXPECT_EQ(r["euid"], 1000);
  EXPECT_EQ(r["gid"], 1000);
  EXPECT_TRUE(r["groups"].empty()) << r.dump();
  const auto& s = r["status"];
  for (const char* cap : {"CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"})
    EXPECT_EQ(s[cap], "0000000000000000") << cap << ": " << r.dump();
  EXPECT_EQ(s["NoNewPrivs"], "1") << r.dump();
  EXPECT_EQ(s["Seccomp"], "2") << r.dump();
}

TEST_F(isolation_test, fork_bomb_is_stopped_and_others_are_served) {
  auto bomb = invoke(make_spec({.name = "bomb", .handler = "functions.fork_bomb", .pids_max = 32}), {}, 10s);
  if (bomb.status == proto::Status::ok) {
    auto r = reported(bomb);
    EXPECT_EQ(r["error"], "EAGAIN") << r.dump();
    EXPECT_LT(r["forked"].get<int>(), 32) << r.dump();
  } else {
    std::printf("fork bomb ended %s: %s\n", proto::EnumNameStatus(bomb.status), bomb.error.c_str());
  }
  // The children hold their pids: init, the runtime and 30 more in the bomb's sandbox.
  EXPECT_GE(count_processes().in_sandboxes, 32u);
  // Its sandbox is still full of processes; another function starts and answers (with a
  // whole vCPU, so that the time is the node's, not the function's CPU share).
  auto t0 = std::chrono::steady_clock::now();
  auto other = invoke(make_spec({.name = "hello", .handler = "functions.hello", .memory_mb = 1769}));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(reported(other)["hello"], "world");
  EXPECT_TRUE(other.cold_start);
  EXPECT_LT(took, 2s);
}

TEST_F(isolation_test, allocating_past_the_limit_is_out_of_memory) {
  auto fn = make_spec({.name = "allocate", .handler = "functions.allocate", .memory_mb = 128});
  auto o = invoke(fn, {{"mb", 512}}, 30s);
  EXPECT_EQ(o.status, proto::Status::out_of_memory) << proto::EnumNameStatus(o.status) << ": " << o.error;
  EXPECT_NE(o.error.find("128 MB"), std::string::npos) << o.error;
  // The next invocation gets a new sandbox, which works within the limit.
  auto small = invoke(fn, {{"mb", 32}});
  EXPECT_EQ(reported(small)["mb"], 32);
  EXPECT_TRUE(small.cold_start);
}

TEST_F(isolation_test, filling_tmp_is_enospc_in_the_sandbox_only) {
  auto fill = invoke(make_spec({.name = "fill-tmp", .handler = "functions.fill_tmp", .tmp_mb = 16}));
  auto r = reported(fill);
  ASSERT_FALSE(r.is_null());
  EXPECT_EQ(r["errno"], ENOSPC) << r.dump();
  const int64_t written = r["written"].get<int64_t>();
  EXPECT_LE(written, int64_t(16) << 20) << r.dump();
  EXPECT_GE(written, int64_t(15) << 20) << r.dump();

  auto list = invoke(make_spec({.name = "list-tmp", .handler = "functions.list_tmp", .tmp_mb = 16}));
  auto l = reported(list);
  EXPECT_NE(list.sandbox, fill.sandbox);
  EXPECT_TRUE(l["tmp"].empty()) << l.dump();
}

TEST_F(isolation_test, second_call_reuses_the_warm_sandbox) {
  auto fn = make_spec({.name = "note", .handler = "functions.tmp_note"});
  auto first = invoke(fn);
  auto r1 = reported(first);
  EXPECT_TRUE(first.cold_start);
  EXPECT_TRUE(r1["before"].is_null()) << r1.dump();

  auto second = invoke(fn);
  auto r2 = reported(second);
  EXPECT_FALSE(second.cold_start);
  EXPECT_EQ(second.sandbox, first.sandbox);
  EXPECT_EQ(second.worker_pid, first.worker_pid);
  EXPECT_EQ(r2["pid"], r1["pid"]);
  EXPECT_TRUE(r2["before"].is_string() && r2["before"].get<std::string>().starts_with("inv-")) << r2.dump();
}

TEST_F(isolation_test, idle_sandbox_is_reaped_after_keep_warm) {
  auto o = options(1s);
  const std::string node_id = o.sandboxes.node_id;
  executor short_lived(o);
  auto fn = make_spec({.name = "hello", .handler = "functions.hello"});
  auto first = invoke(short_lived, fn, json::object());
  ASSERT_EQ(reported(first)["hello"], "world");
  EXPECT_EQ(short_lived.warm_workers(), 1u);
  std::vector<fs::path> dirs;
  for (const auto& tree : tree_dirs(node_id)) dirs.push_back(tree / first.sandbox);
  for (const auto& d : dirs) EXPECT_TRUE(fs::is_directory(d)) << d;

  EXPECT_TRUE(eventually([&] { return short_lived.warm_workers() == 0; }, 5s)) << "still warm after 5 s";
  EXPECT_TRUE(eventually([&] { return std::none_of(dirs.begin(), dirs.end(), [](auto& d) { return fs::exists(d); }); },
                         1s))
      << "the sandbox's cgroup directories outlive it";
  EXPECT_NE(::kill(first.worker_pid, 0), 0);

  auto next = invoke(short_lived, fn, json::object());
  EXPECT_EQ(reported(next)["hello"], "world");
  EXPECT_TRUE(next.cold_start);
  EXPECT_NE(next.sandbox, first.sandbox);
}

// Issue 3 point 7: after 1,000 invocations with crashes, OOMs and timeouts, the node's
// cgroup directories, mounts, processes and descriptors are back to their baseline.
TEST_F(isolation_test, nothing_leaks_after_1000_mixed_invocations) {
  struct kind {
    const char* what;
    int count;
    proto::Status expect;
    std::chrono::milliseconds timeout;
  };
  const kind kinds[] = {{"ok", 800, proto::Status::ok, 30s},
                        {"crash", 80, proto::Status::crashed, 30s},
                        {"oom", 40, proto::Status::out_of_memory, 30s},
                        {"sleep", 20, proto::Status::timeout, 1s},
                        {"raise", 60, proto::Status::error, 30s}};
  std::vector<const kind*> plan;
  for (const auto& k : kinds) plan.insert(plan.end(), size_t(k.count), &k);
  std::shuffle(plan.begin(), plan.end(), std::mt19937(7));

  // Declared before the executor: its destructor may still complete invocations.
  std::mutex m;
  std::condition_variable cv;
  std::vector<outcome> outcomes(plan.size());
  size_t in_flight = 0, done = 0;
  constexpr size_t concurrency = 8;

  const auto mounts_self = lines_of("/proc/self/mountinfo"), mounts_init = lines_of("/proc/1/mountinfo");
  const auto before = count_processes();
  const auto fds_before = open_descriptors();
  auto o = options(1s);
  const std::string node_id = o.sandboxes.node_id;
  auto exec = std::make_unique<executor>(o);
  const auto with_executor = count_processes();  // the zygotes
  ASSERT_EQ(sandbox_cgroup_dirs(node_id), 0u);
  const auto trees = tree_dirs(node_id);
  ASSERT_TRUE(std::any_of(trees.begin(), trees.end(), [](const fs::path& d) { return fs::is_directory(d); }));

  auto fn = make_spec({.name = "mixed", .handler = "functions.mixed", .memory_mb = 128});
  // The baseline is the node with its spare sandboxes (spare_sandboxes per zygote used, a
  // cgroup directory in each hierarchy and two processes each), made after a first invocation.
  const size_t spares = o.sandboxes.spare_sandboxes;
  const size_t spare_dirs = spares * size_t(std::count_if(trees.begin(), trees.end(), [](const fs::path& d) {
                                          return fs::is_directory(d);
                                        }));
  {
    std::promise<outcome> first;
    exec->run(work{.function = fn,
                   .code_dir = code_->path(),
                   .invocation = make_invocation("mixed", json{{"do", "ok"}}.dump()),
                   .timeout = 30s,
                   .done = [&](outcome&& out) { first.set_value(std::move(out)); }});
    ASSERT_EQ(first.get_future().get().status, proto::Status::ok);
  }
  auto only_spares_left = [&] {
    return exec->warm_workers() == 0 && sandbox_cgroup_dirs(node_id) == spare_dirs &&
           count_processes().descendants == with_executor.descendants + 2 * spares;
  };
  ASSERT_TRUE(eventually(only_spares_left, 10s))
      << exec->warm_workers() << " warm, " << sandbox_cgroup_dirs(node_id) << " sandbox cgroup directories, "
      << count_processes().descendants - with_executor.descendants << " processes more than the zygotes";
  const auto fds_with_spares = open_descriptors();
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < plan.size(); ++i) {
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return in_flight < concurrency; });
      ++in_flight;
    }
    exec->run(work{.function = fn,
                   .code_dir = code_->path(),
                   .invocation = make_invocation("mixed", json{{"do", plan[i]->what}}.dump()),
                   .timeout = plan[i]->timeout,
                   .done = [&, i](outcome&& out) {
                     std::lock_guard lock(m);
                     outcomes[i] = std::move(out);
                     --in_flight;
                     ++done;
                     cv.notify_all();
                   }});
  }
  {
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, 240s, [&] { return done == plan.size(); })) << done << " of " << plan.size();
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t cold = 0;
  std::map<std::string, int> wrong;
  for (size_t i = 0; i < plan.size(); ++i) {
    cold += outcomes[i].cold_start;
    if (outcomes[i].status == plan[i]->expect) continue;
    if (wrong[plan[i]->what]++ == 0)
      ADD_FAILURE() << plan[i]->what << " ended " << proto::EnumNameStatus(outcomes[i].status) << ", expected "
                    << proto::EnumNameStatus(plan[i]->expect) << ": " << outcomes[i].error;
  }
  for (const auto& [what, n] : wrong) ADD_FAILURE() << n << " '" << what << "' invocations had the wrong status";
  std::printf("1000 mixed invocations, %zu in flight: %.2f s, %zu cold starts\n", concurrency, took, cold);

  // Idle sandboxes stop after keep_warm; then nothing of them may remain but the spares.
  EXPECT_TRUE(eventually([&] { return exec->warm_workers() == 0; }, 5s)) << exec->warm_workers() << " still warm";
  EXPECT_TRUE(eventually([&] { return sandbox_cgroup_dirs(node_id) == spare_dirs; }, 5s))
      << sandbox_cgroup_dirs(node_id) << " sandbox cgroup directories left";
  EXPECT_TRUE(eventually(only_spares_left, 5s));
  const auto after = count_processes();
  EXPECT_EQ(after.descendants, with_executor.descendants + 2 * spares);
  EXPECT_EQ(after.in_sandboxes, 2 * spares);
  EXPECT_EQ(open_descriptors(), fds_with_spares);
  EXPECT_EQ(lines_of("/proc/self/mountinfo"), mounts_self);
  EXPECT_EQ(lines_of("/proc/1/mountinfo"), mounts_init);

  exec.reset();
  const auto end = count_processes();
  EXPECT_EQ(end.descendants, before.descendants);
  EXPECT_EQ(end.in_sandboxes, 0u);
  EXPECT_EQ(open_descriptors(), fds_before);
  for (const auto& d : trees) EXPECT_FALSE(fs::exists(d)) << d;
  EXPECT_EQ(lines_of("/proc/self/mountinfo"), mounts_self);
  EXPECT_EQ(lines_of("/proc/1/mountinfo"), mounts_init);
  std::printf("processes on the machine: %zu before, %zu after\n", before.system, end.system);
}

}  // namespace
}  // namespace fnmesh::node
