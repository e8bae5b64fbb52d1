// net_guard, as root with real BPF, real cgroups and real sockets: children born in
// sandbox cgroups (host network namespace) send, receive and connect; the guard's counters
// are held against the bytes they moved, and its policies against the errno they saw.
#include "node/bpf/net_guard.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "node/bpf/cpu_meter.h"
#include "node/sandbox/cgroups.h"
#include "tests/support/cgroup_child.h"
#include "tests/support/privileged.h"

namespace fnmesh::node {
namespace {

constexpr int64_t megabyte = 1 << 20;

using test::require_privileged;

// A listening TCP socket on `address` (127.0.0.1 or ::1), on an ephemeral port.
struct listener {
  int fd = -1;
  uint16_t port = 0;
  explicit listener(const char* address = "127.0.0.1") {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (std::strchr(address, ':')) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      ::inet_pton(AF_INET6, address, &a->sin6_addr);
      len = sizeof *a;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      ::inet_pton(AF_INET, address, &a->sin_addr);
      len = sizeof *a;
    }
    fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&ss), len), 0) << std::strerror(errno);
    EXPECT_EQ(::listen(fd, 16), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len), 0);
    port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  ~listener() { ::close(fd); }
};

// ---- what children do (plain system calls only: they are raw clone3 children) ----

sockaddr_storage address_of(int family, const char* address, uint16_t port, socklen_t& len) {
  sockaddr_storage ss{};
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    ::inet_pton(AF_INET6, address, &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    ::inet_pton(AF_INET, address, &a->sin_addr);
    len = sizeof *a;
  }
  return ss;
}

// 0 when a TCP connect from a `family` socket to address:port succeeds, else its errno.
int connect_errno(int family, const char* address, uint16_t port) {
  socklen_t len = 0;
  sockaddr_storage ss = address_of(family, address, port, len);
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int r = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 ? 0 : errno;
  ::close(fd);
  return r;
}

// 0 when an unconnected UDP send to address:port goes out, else its errno.
int sendto_errno(int family, const char* address, uint16_t port) {
  socklen_t len = 0;
  sockaddr_storage ss = address_of(family, address, port, len);
  int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int r = ::sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&ss), len) == 1 ? 0 : errno;
  ::close(fd);
  return r;
}

char chunk[64 * 1024];

// Sends `bytes` over a TCP connection to a listener at 127.0.0.1:port; when `l` is the
// child's own listener, receives them too. Returns 0 when all went through.
int send_bytes(int64_t bytes, uint16_t port, const listener* own) {
  socklen_t len = 0;
  sockaddr_storage ss = address_of(AF_INET, "127.0.0.1", port, len);
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(c, reinterpret_cast<sockaddr*>(&ss), len) != 0) return 1;
  int peer = own ? ::accept4(own->fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK) : -1;
  ::fcntl(c, F_SETFL, O_NONBLOCK);
  int64_t sent = 0, received = 0;
  while (sent < bytes || (own && received < bytes)) {
    pollfd p[2] = {{c, short(sent < bytes ? POLLOUT : 0), 0}, {peer, POLLIN, 0}};
    if (::poll(p, own ? 2 : 1, 5000) <= 0) return 2;
    if (p[0].revents & POLLOUT) {
      ssize_t n = ::send(c, chunk, size_t(std::min<int64_t>(sizeof chunk, bytes - sent)), MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) return 3;
      sent += std::max<ssize_t>(n, 0);
    }
    if (own && (p[1].revents & POLLIN)) {
      char sink[64 * 1024];
      ssize_t n = ::recv(peer, sink, sizeof sink, 0);
      if (n < 0 && errno != EAGAIN) return 4;
      received += std::max<ssize_t>(n, 0);
    }
  }
  ::close(c);
  if (peer >= 0) ::close(peer);
  return 0;
}

// Runs `body` in a child born in `cg`; returns its exit code (what body returned).
int run_in(sandbox_cgroup& cg, const std::function<int()>& body) {
  auto child = test::spawn_in(cg, body);
  EXPECT_GT(child.pid, 0);
  child.release();
  return child.exit_code();
}

class net_guard_test : public ::testing::Test {
 protected:
  struct sandbox {
    sandbox_cgroup cg;
    uint64_t id = 0;
  };

  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "net_guard_test needs root (FNMESH_REQUIRE_PRIVILEGED=1)";
      GTEST_SKIP() << "net_guard_test needs root";
    }
    auto t = cgroup_tree::open("nettest-" + std::to_string(::getpid()));
    ASSERT_TRUE(t) << t.error().message();
    tree_ = std::move(*t);
    auto g = net_guard::open({.cgroup_dir = tree_->dirs().front()});
    if (!g) {
      if (require_privileged()) GTEST_FAIL() << g.error().message();
      GTEST_SKIP() << g.error().message();
    }
    guard_ = std::move(*g);
  }

  sandbox make(const std::string& name, proto::NetworkPolicy policy, std::vector<std::string> allow = {}) {
    sandbox s;
    auto cg = tree_->create(name, {});
    EXPECT_TRUE(cg) << cg.error().message();
    if (!cg) return s;
    s.cg = std::move(*cg);
    s.id = cgroup_id(s.cg.v2_fd()).value_or(0);
    std::vector<allow_entry> entries;
    for (const auto& text : allow) {
      auto e = parse_allow_entry(text);
      EXPECT_TRUE(e) << text << ": " << e.error();
      if (e) entries.push_back(*e);
    }
    auto w = guard_->watch(s.id, policy, entries);
    EXPECT_TRUE(w) << w.error().message();
    return s;
  }

  net_traffic traffic(const sandbox& s) {
    auto t = guard_->traffic(s.id);
    EXPECT_TRUE(t) << t.error().message();
    return t.value_or(net_traffic{});
  }

  std::unique_ptr<cgroup_tree> tree_;
  std::unique_ptr<net_guard> guard_;
};

TEST_F(net_guard_test, api_errors) {
  auto s = make("api", proto::NetworkPolicy::host);
  EXPECT_EQ(traffic(s).tx_bytes, 0);
  EXPECT_EQ(guard_->watch(s.id, proto::NetworkPolicy::host).error(), std::errc::file_exists);
  EXPECT_TRUE(guard_->unwatch(s.id));
  EXPECT_EQ(guard_->unwatch(s.id).error(), std::errc::no_such_file_or_directory);
  EXPECT_EQ(guard_->traffic(s.id).error(), std::errc::no_such_file_or_directory);
  auto not_v2 = net_guard::open({.cgroup_dir = "/tmp"});
  EXPECT_EQ(not_v2.error(), std::errc::not_a_directory);
}

TEST_F(net_guard_test, a_megabyte_over_loopback_counts_out_and_in) {
  auto s = make("loop", proto::NetworkPolicy::loopback);
  // To a listener of its own: the bytes leave one of its sockets and reach another.
  ASSERT_EQ(run_in(s.cg, [&] {
              listener child_own;
              return send_bytes(megabyte, child_own.port, &child_own);
            }),
            0);
  auto t = traffic(s);
  std::printf("1 MiB sent and received in one sandbox: tx %lld, rx %lld bytes\n", (long long)t.tx_bytes,
              (long long)t.rx_bytes);
  EXPECT_GE(t.tx_bytes, megabyte);
  EXPECT_GE(t.rx_bytes, megabyte);
  EXPECT_LT(t.tx_bytes, megabyte * 11 / 10);  // headers and the other direction's acks
  EXPECT_LT(t.rx_bytes, megabyte * 11 / 10);
  EXPECT_EQ(t.refused, 0);
}

TEST_F(net_guard_test, two_sandboxes_at_once_count_only_their_own_bytes) {
  auto big = make("big", proto::NetworkPolicy::host);
  auto small = make("small", proto::NetworkPolicy::host);
  listener sink;  // the test's: neither sandbox's
  // The test accepts and drains both connections while both children send.
  auto a = test::spawn_in(big.cg, [&] { return send_bytes(4 * megabyte, sink.port, nullptr); });
  auto b = test::spawn_in(small.cg, [&] { return send_bytes(64 * 1024, sink.port, nullptr); });
  a.release();
  b.release();
  int peers[2] = {::accept4(sink.fd, nullptr, nullptr, SOCK_CLOEXEC), ::accept4(sink.fd, nullptr, nullptr, SOCK_CLOEXEC)};
  int64_t drained = 0;
  for (int open = 2; open > 0;) {
    pollfd p[2] = {{peers[0], POLLIN, 0}, {peers[1], POLLIN, 0}};
    ASSERT_GT(::poll(p, 2, 5000), 0);
    for (int i = 0; i < 2; ++i)
      if (p[i].revents & (POLLIN | POLLHUP)) {
        ssize_t n = ::recv(peers[i], chunk, sizeof chunk, 0);
        if (n <= 0) {
          ::close(peers[i]);
          peers[i] = -1;
          --open;
        }
        drained += std::max<ssize_t>(n, 0);
      }
  }
  EXPECT_EQ(a.exit_code(), 0);
  EXPECT_EQ(b.exit_code(), 0);
  EXPECT_EQ(drained, 4 * megabyte + 64 * 1024);
  auto tb = traffic(big), ts = traffic(small);
  std::printf("at once: 4 MiB sent: tx %lld rx %lld; 64 KiB sent: tx %lld rx %lld bytes\n", (long long)tb.tx_bytes,
              (long long)tb.rx_bytes, (long long)ts.tx_bytes, (long long)ts.rx_bytes);
  EXPECT_GE(tb.tx_bytes, 4 * megabyte);
  EXPECT_LT(tb.tx_bytes, 4 * megabyte * 11 / 10);
  EXPECT_GE(ts.tx_bytes, 64 * 1024);
  EXPECT_LT(ts.tx_bytes, 64 * 1024 * 3 / 2);
  // What they received is the acks of their own bytes only.
  EXPECT_LT(tb.rx_bytes, 4 * megabyte / 10);
  EXPECT_LT(ts.rx_bytes, 64 * 1024 / 2);
}

TEST_F(net_guard_test, policy_none_refuses_every_connect_and_send) {
  auto s = make("none", proto::NetworkPolicy::none);
  listener host;
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.1", host.port); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET6, "::1", host.port); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return sendto_errno(AF_INET, "127.0.0.1", 9); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return sendto_errno(AF_INET6, "::1", 9); }), EPERM);
  auto t = traffic(s);
  EXPECT_EQ(t.refused, 4);
  EXPECT_EQ(t.tx_bytes, 0);
}

TEST_F(net_guard_test, policy_loopback_allows_only_loopback_addresses) {
  auto s = make("loopback", proto::NetworkPolicy::loopback);
  listener host;
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.1", host.port); }), 0);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET6, "::ffff:127.0.0.1", host.port); }), 0);
  EXPECT_EQ(run_in(s.cg, [&] { return sendto_errno(AF_INET, "127.0.0.1", 9); }), 0);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "192.0.2.1", 80); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET6, "2001:db8::1", 80); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return sendto_errno(AF_INET, "192.0.2.1", 53); }), EPERM);
  EXPECT_EQ(traffic(s).refused, 3);
}

TEST_F(net_guard_test, an_allow_list_allows_its_entries_only) {
  listener listed, other, listed6("::1");
  auto s = make("allow", proto::NetworkPolicy::allow_list,
                {"127.0.0.1:" + std::to_string(listed.port), "[::1]:" + std::to_string(listed6.port), "127.0.0.2/31",
                 "192.0.2.0/24:53"});
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.1", listed.port); }), 0);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET6, "::ffff:127.0.0.1", listed.port); }), 0);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET6, "::1", listed6.port); }), 0);
  // A network without a port: every port (nobody listens on 127.0.0.3: the kernel says so).
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.3", other.port); }), ECONNREFUSED);
  EXPECT_NE(run_in(s.cg, [&] { return sendto_errno(AF_INET, "192.0.2.7", 53); }), EPERM);
  EXPECT_EQ(traffic(s).refused, 0);

  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.1", other.port); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET6, "::1", listed.port); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.4", listed.port); }), EPERM);
  EXPECT_EQ(run_in(s.cg, [&] { return sendto_errno(AF_INET, "192.0.2.7", 54); }), EPERM);
  EXPECT_EQ(traffic(s).refused, 4);
  EXPECT_GT(traffic(s).tx_bytes, 0);

  // Its entries are its own: another sandbox under an allow-list of nothing useful.
  auto stranger = make("stranger", proto::NetworkPolicy::allow_list, {"192.0.2.1:1"});
  EXPECT_EQ(run_in(stranger.cg, [&] { return connect_errno(AF_INET, "127.0.0.1", listed.port); }), EPERM);
  // And they go with unwatch: the cgroup is then neither refused nor counted.
  ASSERT_TRUE(guard_->unwatch(s.id));
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.1", other.port); }), 0);
  EXPECT_TRUE(guard_->watch(s.id, proto::NetworkPolicy::allow_list, {}));
  EXPECT_EQ(run_in(s.cg, [&] { return connect_errno(AF_INET, "127.0.0.1", listed.port); }), EPERM);
}

}  // namespace
}  // namespace fnmesh::node
