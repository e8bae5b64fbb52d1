#include "node/sandbox/cgroups.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <thread>

#include "common/log.h"

namespace fnmesh::node {
namespace {

constexpr int64_t cpu_period_us = 100'000;
constexpr int64_t cpu_min_quota_us = 1'000;
constexpr auto leftover_wait = std::chrono::seconds(2);

std::unexpected<std::error_code> fail_at(std::string_view what, const std::string& path, int e) {
  logger("sandbox")->warn("cgroup: {} {}: {}", what, path, std::strerror(e));
  return fail_errno(e);
}

bool valid_name(std::string_view n) {
  return !n.empty() && n.size() <= 200 && n != "." && n != ".." &&
         n.find_first_of(std::string_view("/\n\0", 3)) == std::string_view::npos;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto i = s.find(sep);
    if (i != 0) out.push_back(s.substr(0, i));
    if (i == std::string_view::npos) break;
    s.remove_prefix(i + 1);
  }
  return out;
}

template <class T>
bool contains(const std::vector<T>& v, std::string_view x) {
  return std::ranges::find(v, x) != v.end();
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 4, v, 8);
      if (ec == std::errc() && p == s.data() + i + 4) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// The directory of cgroup `own` in a mount of the hierarchy whose root is `root`.
std::optional<std::string> below(const std::string& mount, std::string_view root, std::string_view own) {
  std::string_view rel;
  if (root == "/") rel = own;
  else if (own == root) rel = "";
  else if (own.starts_with(root) && own.size() > root.size() && own[root.size()] == '/') rel = own.substr(root.size());
  else return std::nullopt;
  if (rel == "/") rel = "";
  return mount + std::string(rel);
}

result<std::string> read_file(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno(errno);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return fail_errno(errno);
    if (n == 0) return out;
    out.append(buf, n);
  }
}

// 0 or the errno of the failed open/write.
int write_at(int dirfd, const char* file, std::string_view value) {
  unique_fd fd(::openat(dirfd, file, O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  if (::write(fd.get(), value.data(), value.size()) < 0) return errno;
  return 0;
}

int write_path(const std::string& path, std::string_view value) { return write_at(AT_FDCWD, path.c_str(), value); }

int64_t parse_number(std::string_view s) {
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// pread from the start: cgroup files regenerate their text at offset 0.
std::string_view pread_text(int fd, char* buf, size_t size) {
  if (fd < 0) return {};
  ssize_t n = ::pread(fd, buf, size, 0);
  return n > 0 ? std::string_view(buf, n) : std::string_view();
}

int64_t read_number(int fd) {
  char buf[64];
  return parse_number(pread_text(fd, buf, sizeof buf));
}

// The value of a "key value" line (memory.events, memory.oom_control, cpu.stat).
int64_t read_key(int fd, std::string_view key) {
  char buf[1024];
  for (auto line : split(pread_text(fd, buf, sizeof buf), '\n'))
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ' ')
      return parse_number(line.substr(key.size() + 1));
  return 0;
}

std::vector<pid_t> read_pids(const std::string& dir) {
  std::vector<pid_t> out;
  auto text = read_file(dir + "/cgroup.procs");
  if (text)
    for (auto line : split(*text, '\n')) out.push_back(static_cast<pid_t>(parse_number(line)));
  return out;
}

// SIGKILL to every process listed, again for any that appear meanwhile (children forked
// before their parent died).
void kill_listed(const std::string& dir, std::vector<pid_t>& signalled) {
  for (int round = 0; round < 100; ++round) {
    bool fresh = false;
    for (pid_t p : read_pids(dir)) {
      if (p <= 0 || std::ranges::find(signalled, p) != signalled.end()) continue;
      ::kill(p, SIGKILL);
      signalled.push_back(p);
      fresh = true;
    }
    if (!fresh) return;
  }
}

unique_fd open_dir_at(int dirfd, const std::string& name) {
  return unique_fd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

result<void> write_limit(int dirfd, const std::string& dir, const char* file, const std::string& value,
                         bool optional = false) {
  int e = write_at(dirfd, file, value);
  if (e == 0 || (optional && e == ENOENT)) return {};
  return fail_at("write " + value + " to", dir + "/" + file, e);
}

int64_t cpu_quota_us(double cpus) {
  return std::max(cpu_min_quota_us, static_cast<int64_t>(std::llround(cpus * cpu_period_us)));
}

constexpr std::string_view used_controllers[] = {"memory", "cpu", "pids", "cpuacct"};
constexpr std::pair<cgroup_controller, std::string_view> limit_controllers[] = {
    {cgroup_controller::memory, "memory"}, {cgroup_controller::cpu, "cpu"}, {cgroup_controller::pids, "pids"}};

}  // namespace

cgroup_layout parse_cgroup_layout(std::string_view mountinfo, std::string_view self_cgroup) {
  struct own_cgroup {
    std::vector<std::string_view> controllers;
    std::string_view path;
    bool found = false;
  };
  std::optional<std::string_view> v2_own;
  std::vector<own_cgroup> v1_own;
  for (auto line : split(self_cgroup, '\n')) {
    auto a = line.find(':');
    auto b = a == std::string_view::npos ? a : line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    auto controllers = line.substr(a + 1, b - a - 1);
    auto path = line.substr(b + 1);
    if (line.substr(0, a) == "0" && controllers.empty()) {
      v2_own = path;
      continue;
    }
    auto list = split(controllers, ',');
    if (std::ranges::any_of(used_controllers, [&](auto c) { return contains(list, c); }))
      v1_own.push_back({std::move(list), path});
  }

  cgroup_layout out;
  for (auto line : split(mountinfo, '\n')) {
    auto f = split(line, ' ');
    auto sep = std::ranges::find(f, std::string_view("-"));
    if (f.size() < 5 || f.end() - sep < 4) continue;
    std::string_view type = sep[1], root = f[3];
    std::string mount = unescape(f[4]);
    if (type == "cgroup2" && v2_own && out.v2_dir.empty()) {
      if (auto dir = below(mount, root, *v2_own)) out.v2_dir = *dir;
    } else if (type == "cgroup") {
      auto options = split(sep[3], ',');
      for (auto& own : v1_own) {
        if (own.found || !std::ranges::all_of(own.controllers, [&](auto c) { return contains(options, c); }))
          continue;
        auto dir = below(mount, root, own.path);
        if (!dir) continue;
        own.found = true;
        out.v1.push_back({.dir = *dir,
                          .memory = contains(own.controllers, "memory"),
                          .cpu = contains(own.controllers, "cpu"),
                          .pids = contains(own.controllers, "pids"),
                          .cpuacct = contains(own.controllers, "cpuacct")});
      }
    }
  }
  return out;
}

// --- sandbox_cgroup ---

sandbox_cgroup::sandbox_cgroup(sandbox_cgroup&& o) noexcept { *this = std::move(o); }

sandbox_cgroup& sandbox_cgroup::operator=(sandbox_cgroup&& o) noexcept {
  if (this != &o) {
    release();
    v2_dir_ = std::exchange(o.v2_dir_, {});
    v1_dirs_ = std::exchange(o.v1_dirs_, {});
    v2_ = std::move(o.v2_);
    oom_ = std::move(o.oom_);
    peak_ = std::move(o.peak_);
    limits_ = std::move(o.limits_);
    cpu_user_ = std::move(o.cpu_user_);
    cpu_sys_ = std::move(o.cpu_sys_);
    cpu_usec_ = o.cpu_usec_;
  }
  return *this;
}

sandbox_cgroup::~sandbox_cgroup() { release(); }

void sandbox_cgroup::release() noexcept {
  if (v2_dir_.empty() && v1_dirs_.empty()) return;
  kill();
  (void)remove();
}

result<void> sandbox_cgroup::attach(pid_t pid) {
  auto text = std::to_string(pid);
  for (const auto& dir : v1_dirs_)
    if (int e = write_path(dir + "/cgroup.procs", text)) return fail_at("attach " + text + " to", dir, e);
  return {};
}

bool sandbox_cgroup::oom_killed() const { return read_key(oom_.get(), "oom_kill") > 0; }

int64_t sandbox_cgroup::peak_memory_bytes() const { return read_number(peak_.get()); }

result<void> sandbox_cgroup::limit(const cgroup_limits& limits) {
  const auto memory = std::to_string(limits.memory_bytes);
  const auto pids = std::to_string(limits.pids_max);
  for (const auto& d : limits_) {
    const int fd = d.fd.get();
    if (d.memory && limits.memory_bytes > 0) {
      if (d.v2) {
        if (auto r = write_limit(fd, d.dir, "memory.max", memory); !r) return r;
        if (auto r = write_limit(fd, d.dir, "memory.swap.max", "0", true); !r) return r;
      } else {
        if (auto r = write_limit(fd, d.dir, "memory.limit_in_bytes", memory); !r) return r;
        if (auto r = write_limit(fd, d.dir, "memory.memsw.limit_in_bytes", memory, true); !r) return r;
        if (auto r = write_limit(fd, d.dir, "memory.swappiness", "0"); !r) return r;
      }
    }
    if (d.pids && limits.pids_max > 0)
      if (auto r = write_limit(fd, d.dir, "pids.max", pids); !r) return r;
  }
  return limits.cpus > 0 ? set_cpus(limits.cpus) : result<void>{};
}

result<void> sandbox_cgroup::set_cpus(double cpus) {
  const auto quota = std::to_string(cpu_quota_us(cpus));
  for (const auto& d : limits_) {
    if (!d.cpu) continue;
    if (d.v2) return write_limit(d.fd.get(), d.dir, "cpu.max", quota + " " + std::to_string(cpu_period_us));
    return write_limit(d.fd.get(), d.dir, "cpu.cfs_quota_us", quota);
  }
  return {};
}

cpu_time sandbox_cgroup::cpu() const {
  if (cpu_usec_)
    return {read_key(cpu_user_.get(), "user_usec") * 1000, read_key(cpu_user_.get(), "system_usec") * 1000};
  return {read_number(cpu_user_.get()), read_number(cpu_sys_.get())};
}

void sandbox_cgroup::reset_peak() {
  if (peak_) (void)::pwrite(peak_.get(), "0", 1, 0);
}

void sandbox_cgroup::kill() {
  std::vector<pid_t> signalled;
  if (!v2_dir_.empty() && write_path(v2_dir_ + "/cgroup.kill", "1") != 0) kill_listed(v2_dir_, signalled);
  for (const auto& dir : v1_dirs_) kill_listed(dir, signalled);
}

size_t sandbox_cgroup::processes() const {
  size_t n = v2_dir_.empty() ? 0 : read_pids(v2_dir_).size();
  for (const auto& dir : v1_dirs_) n = std::max(n, read_pids(dir).size());
  return n;
}

result<void> sandbox_cgroup::remove() {
  int err = 0;
  auto gone = [&](const std::string& dir) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return true;
    err = errno;
    return false;
  };
  if (!v2_dir_.empty() && gone(v2_dir_)) v2_dir_.clear();
  std::erase_if(v1_dirs_, gone);
  if (err) return fail_errno(err);
  v2_.reset();
  oom_.reset();
  peak_.reset();
  limits_.clear();
  cpu_user_.reset();
  cpu_sys_.reset();
  return {};
}

// --- cgroup_tree ---

namespace {

// Makes (or adopts) the directory and opens it.
result<unique_fd> make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return fail_at("mkdir", dir, errno);
  unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_at("open", dir, errno);
  return fd;
}

// Enables `wanted` for the children of `own` (v2); returns those now enabled. When the
// node's own cgroup holds only the node, the node first moves into the leaf `own`/`leaf`.
std::vector<std::string_view> enable_v2(const std::string& own, std::vector<std::string_view> wanted,
                                        const std::string& leaf, std::string& note) {
  auto words = [](const std::string& path) {
    auto text = read_file(path).value_or("");
    std::ranges::replace(text, '\n', ' ');
    std::vector<std::string> out;
    for (auto w : split(text, ' ')) out.emplace_back(w);
    return out;
  };
  auto available = words(own + "/cgroup.controllers");
  std::erase_if(wanted, [&](auto c) { return !contains(available, c); });
  if (wanted.empty()) return {};
  auto enabled = words(own + "/cgroup.subtree_control");
  std::string add;
  for (auto c : wanted)
    if (!contains(enabled, c)) add += "+" + std::string(c) + " ";
  if (add.empty()) return wanted;

  const std::string control = own + "/cgroup.subtree_control";
  int e = write_path(control, add);
  if (e == EBUSY && read_pids(own) == std::vector<pid_t>{::getpid()}) {
    const std::string leaf_dir = own + "/" + leaf;
    if (::mkdir(leaf_dir.c_str(), 0755) == 0 || errno == EEXIST) {
      if (write_path(leaf_dir + "/cgroup.procs", std::to_string(::getpid())) == 0) {
        note = "moved this process to " + leaf_dir;
        e = write_path(control, add);
      }
    }
  }
  if (e) {
    note = "v2 controllers not enabled in " + own + ": " + std::strerror(e);
    if (e == EBUSY) note += " (other processes share this cgroup)";
    return {};
  }
  return wanted;
}

}  // namespace

result<std::unique_ptr<cgroup_tree>> cgroup_tree::open(std::string_view node_id) {
  if (!valid_name(node_id)) return fail_at("bad node id for", std::string(node_id), EINVAL);
  auto mountinfo = read_file("/proc/self/mountinfo");
  if (!mountinfo) return fail_at("read", "/proc/self/mountinfo", mountinfo.error().value());
  auto self = read_file("/proc/self/cgroup");
  if (!self) return fail_at("read", "/proc/self/cgroup", self.error().value());
  auto layout = parse_cgroup_layout(*mountinfo, *self);

  std::unique_ptr<cgroup_tree> t(new cgroup_tree);
  const std::string name = "fnmesh-" + std::string(node_id);
  for (const auto& h : layout.v1) {
    auto fd = make_dir(h.dir + "/" + name);
    if (!fd) return fail(fd.error());
    t->v1_.push_back({.dir = h.dir + "/" + name, .fd = std::move(*fd), .memory = h.memory, .cpu = h.cpu,
                      .pids = h.pids, .cpuacct = h.cpuacct});
  }
  if (!layout.v2_dir.empty()) {
    std::vector<std::string_view> wanted;
    for (auto [c, n] : limit_controllers)
      if (t->version_of(c) == cgroup_version::none) wanted.push_back(n);
    auto enabled = enable_v2(layout.v2_dir, wanted, name + ".node", t->note_);
    auto dir = layout.v2_dir + "/" + name;
    auto fd = make_dir(dir);
    if (!fd) return fail(fd.error());
    t->v2_.dir = dir;
    t->v2_.fd = std::move(*fd);
    if (!enabled.empty()) {
      std::string add;
      for (auto c : enabled) add += "+" + std::string(c) + " ";
      if (int e = write_path(dir + "/cgroup.subtree_control", add)) {
        t->note_ = "v2 controllers not enabled in " + dir + ": " + std::strerror(e);
        enabled.clear();
      }
    }
    t->v2_.memory = contains(enabled, "memory");
    t->v2_.cpu = contains(enabled, "cpu");
    t->v2_.pids = contains(enabled, "pids");
  }
  if (auto r = t->remove_leftovers(); !r) return fail(r.error());
  return t;
}

cgroup_tree::~cgroup_tree() {
  (void)remove_leftovers();
  auto remove_dir = [](hierarchy& h) {
    if (!h.fd) return;
    h.fd.reset();
    if (::rmdir(h.dir.c_str()) != 0 && errno != ENOENT)
      logger("sandbox")->warn("cgroup: rmdir {}: {}", h.dir, std::strerror(errno));
  };
  remove_dir(v2_);
  for (auto& h : v1_) remove_dir(h);
}

result<void> cgroup_tree::remove_leftovers() const {
  std::set<std::string> names;
  auto list = [&](const hierarchy& h) {
    if (!h.fd) return;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(h.dir, ec))
      if (e.is_directory(ec)) names.insert(e.path().filename().string());
  };
  list(v2_);
  for (const auto& h : v1_) list(h);

  std::vector<sandbox_cgroup> left;
  for (const auto& name : names) {
    auto& s = left.emplace_back();
    auto adopt = [&](const hierarchy& h) {
      auto dir = h.dir + "/" + name;
      return h.fd && ::access(dir.c_str(), F_OK) == 0 ? dir : std::string();
    };
    s.v2_dir_ = adopt(v2_);
    for (const auto& h : v1_)
      if (auto dir = adopt(h); !dir.empty()) s.v1_dirs_.push_back(dir);
    s.kill();
  }
  const auto deadline = std::chrono::steady_clock::now() + leftover_wait;
  for (auto& s : left) {
    result<void> r;
    while (!(r = s.remove()) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      s.kill();
    }
    if (!r) return fail_at("remove leftover cgroup", s.v2_dir_.empty() ? s.v1_dirs_.front() : s.v2_dir_,
                           r.error().value());
  }
  return {};
}

std::string cgroup_tree::describe() const {
  std::string d;
  if (v2_.dir.empty()) {
    d = "no cgroup v2 mount";
  } else {
    std::string c;
    for (auto [on, n] : {std::pair{v2_.memory, "memory"}, {v2_.cpu, "cpu"}, {v2_.pids, "pids"}})
      if (on) c += (c.empty() ? "" : ", ") + std::string(n);
    d = "cgroup v2 " + v2_.dir + " (" + (c.empty() ? "no controllers" : c) + ")";
  }
  std::string v1;
  auto has = [&](bool hierarchy::*flag) { return std::ranges::any_of(v1_, [&](auto& h) { return h.*flag; }); };
  for (auto [flag, n] : {std::pair{&hierarchy::memory, "memory"}, {&hierarchy::cpu, "cpu"},
                         {&hierarchy::pids, "pids"}, {&hierarchy::cpuacct, "cpuacct"}})
    if (has(flag)) v1 += (v1.empty() ? "" : ", ") + std::string(n);
  if (!v1.empty()) d += "; v1 " + v1;
  for (auto [c, n] : limit_controllers)
    if (version_of(c) == cgroup_version::none) d += "; no " + std::string(n) + " limit";
  if (!note_.empty()) d += "; " + note_;
  return d;
}

cgroup_version cgroup_tree::version_of(cgroup_controller c) const {
  bool hierarchy::*flag = c == cgroup_controller::memory ? &hierarchy::memory
                          : c == cgroup_controller::cpu  ? &hierarchy::cpu
                                                         : &hierarchy::pids;
  if (std::ranges::any_of(v1_, [&](auto& h) { return h.*flag; })) return cgroup_version::v1;
  return v2_.*flag ? cgroup_version::v2 : cgroup_version::none;
}

std::vector<std::string> cgroup_tree::dirs() const {
  std::vector<std::string> out;
  if (!v2_.dir.empty()) out.push_back(v2_.dir);
  for (const auto& h : v1_) out.push_back(h.dir);
  return out;
}

result<sandbox_cgroup> cgroup_tree::create(std::string_view name, const cgroup_limits& limits) const {
  if (!valid_name(name)) return fail_at("bad sandbox name", std::string(name), EINVAL);
  const std::string n(name);
  sandbox_cgroup s;

  if (v2_.fd) {
    auto dir = v2_.dir + "/" + n;
    if (::mkdirat(v2_.fd.get(), n.c_str(), 0755) != 0) return fail_at("mkdir", dir, errno);
    s.v2_dir_ = dir;
    s.v2_ = open_dir_at(v2_.fd.get(), n);
    if (!s.v2_) return fail_at("open", dir, errno);
    int fd = s.v2_.get();
    if (v2_.memory || v2_.cpu || v2_.pids)
      s.limits_.push_back({.fd = unique_fd(::dup(fd)), .dir = dir, .v2 = true, .memory = v2_.memory, .cpu = v2_.cpu,
                           .pids = v2_.pids});
    if (v2_.memory) {
      s.oom_.reset(::openat(fd, "memory.events", O_RDONLY | O_CLOEXEC));
      // Writable memory.peak (kernel >= 6.12) resets the peak seen through this descriptor.
      s.peak_.reset(::openat(fd, "memory.peak", O_RDWR | O_CLOEXEC));
      if (!s.peak_) s.peak_.reset(::openat(fd, "memory.peak", O_RDONLY | O_CLOEXEC));
    }
    s.cpu_user_.reset(::openat(fd, "cpu.stat", O_RDONLY | O_CLOEXEC));
    s.cpu_usec_ = true;
  }

  for (const auto& h : v1_) {
    auto dir = h.dir + "/" + n;
    if (::mkdirat(h.fd.get(), n.c_str(), 0755) != 0) return fail_at("mkdir", dir, errno);
    s.v1_dirs_.push_back(dir);
    auto dfd = open_dir_at(h.fd.get(), n);
    if (!dfd) return fail_at("open", dir, errno);
    int fd = dfd.get();
    if (h.memory) {
      s.oom_.reset(::openat(fd, "memory.oom_control", O_RDONLY | O_CLOEXEC));
      s.peak_.reset(::openat(fd, "memory.max_usage_in_bytes", O_RDWR | O_CLOEXEC));
    }
    if (h.cpuacct) {
      s.cpu_user_.reset(::openat(fd, "cpuacct.usage_user", O_RDONLY | O_CLOEXEC));
      s.cpu_sys_.reset(::openat(fd, "cpuacct.usage_sys", O_RDONLY | O_CLOEXEC));
      s.cpu_usec_ = false;
    }
    if (h.memory || h.cpu || h.pids)
      s.limits_.push_back({.fd = std::move(dfd), .dir = dir, .memory = h.memory, .cpu = h.cpu, .pids = h.pids});
  }
  if (auto r = s.limit(limits); !r) return fail(r.error());
  return s;
}

}  // namespace fnmesh::node
