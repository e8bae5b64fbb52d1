// Network per invocation (issue 4): real sandboxes running the python functions of
// examples/testing send and connect; what the outcome reports is held against what they
// did, and each network policy against the errno they saw.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>

#include <nlohmann/json.hpp>

#include "node/sandbox/executor.h"
#include "tests/support/privileged.h"
#include "tests/support/sandbox_files.h"

namespace fnmesh::node {
namespace {

using test::build_dir;
using test::source_dir;

constexpr int64_t megabyte = 1 << 20;

using test::require_privileged;

broker::function_ptr spec_of(const std::string& name, const std::string& handler, proto::NetworkPolicy network,
                             const std::vector<std::string>& allow = {}) {
  flatbuffers::FlatBufferBuilder b;
  auto list = allow.empty() ? 0 : b.CreateVectorOfStrings(allow);
  auto n = b.CreateString(name), v = b.CreateString("v1"), t = b.CreateString("test"), h = b.CreateString(handler);
  b.Finish(proto::CreateFunctionSpec(b, n, v, t, proto::Runtime::python3, h, 128, 10, 0, 0, network, list));
  return std::make_shared<broker::function_record>(
      std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()));
}

std::vector<uint8_t> invocation_of(const std::string& function, const nlohmann::json& event) {
  static int counter = 0;
  flatbuffers::FlatBufferBuilder b;
  const std::string payload = event.dump();
  std::vector<uint8_t> data(payload.begin(), payload.end());
  std::string id = "net-" + std::to_string(++counter);
  b.Finish(proto::CreateInvocationDirect(b, id.c_str(), "test", function.c_str(), "v1", &data, "application/json",
                                         proto::Trigger::cli, "", 0, 0, 1));
  auto bytes = proto::bytes(b);
  return {bytes.begin(), bytes.end()};
}

nlohmann::json output_of(const outcome& o) {
  return nlohmann::json::parse(std::string(o.output.begin(), o.output.end()), nullptr, false);
}

// A TCP listener of the test's on 127.0.0.1, on an ephemeral port.
struct listener {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  uint16_t port = 0;
  listener() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), len), 0);
    EXPECT_EQ(::listen(fd, 16), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port = ntohs(a.sin_port);
  }
  ~listener() { ::close(fd); }
};

class network_test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      if (require_privileged()) GTEST_FAIL() << "network_test makes sandboxes: it needs root";
      GTEST_SKIP() << "network_test makes sandboxes: it needs root";
    }
#ifndef FNMESH_HAVE_BPF
    if (require_privileged()) GTEST_FAIL() << "built without BPF (FNMESH_BPF=OFF)";
    GTEST_SKIP() << "built without BPF";
#endif
    exec_ = std::make_unique<executor>(options(true));
  }

  static executor_options options(bool bpf) {
    static int fixture = 0;
    executor_options o;
    o.sandboxes = test::sandbox_files("network-test-" + std::to_string(::getpid()) + "-" + std::to_string(++fixture),
                                      std::filesystem::temp_directory_path() / ("fnmesh-network-test-" + std::to_string(::getpid())));
    o.bpf = bpf;
    return o;
  }

  std::future<outcome> start(executor& e, const broker::function_ptr& fn, const nlohmann::json& event) {
    auto p = std::make_shared<std::promise<outcome>>();
    auto f = p->get_future();
    e.run(work{.function = fn,
               .code_dir = source_dir() / "examples/testing",
               .invocation = invocation_of(std::string(proto::view(fn->spec().name())), event),
               .timeout = std::chrono::seconds(10),
               .done = [p](outcome&& o) { p->set_value(std::move(o)); }});
    return f;
  }

  outcome invoke(const broker::function_ptr& fn, const nlohmann::json& event) { return invoke(*exec_, fn, event); }
  outcome invoke(executor& e, const broker::function_ptr& fn, const nlohmann::json& event) {
    auto f = start(e, fn, event);
    if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      ADD_FAILURE() << "no outcome within 30 s";
      return {};
    }
    return f.get();
  }

  std::string connect_result(const broker::function_ptr& fn, const nlohmann::json& event, outcome* out = nullptr) {
    auto o = invoke(fn, event);
    EXPECT_EQ(o.status, proto::Status::ok) << o.error;
    if (out) *out = o;
    auto r = output_of(o);
    return r.is_object() ? r.value("result", "") : "";
  }

  std::unique_ptr<executor> exec_;
};

TEST_F(network_test, a_megabyte_sent_over_loopback_is_reported_out_and_in) {
  auto fn = spec_of("net-send", "functions.net_send", proto::NetworkPolicy::loopback);
  auto cold = invoke(fn, {{"bytes", 1}});
  ASSERT_EQ(cold.status, proto::Status::ok) << cold.error;
  auto o = invoke(fn, {{"bytes", megabyte}});
  ASSERT_EQ(o.status, proto::Status::ok) << o.error;
  EXPECT_EQ(output_of(o)["received"], megabyte);
  std::printf("1 MiB sent to itself: tx %lld, rx %lld bytes\n", (long long)o.net_tx_bytes, (long long)o.net_rx_bytes);
  EXPECT_GE(o.net_tx_bytes, megabyte);
  EXPECT_GE(o.net_rx_bytes, megabyte);
  EXPECT_LT(o.net_tx_bytes, megabyte * 11 / 10);
  EXPECT_EQ(o.net_refused, 0);
  // The next invocation of the same sandbox reports its own bytes only.
  auto small = invoke(fn, {{"bytes", 1000}});
  ASSERT_EQ(small.status, proto::Status::ok) << small.error;
  EXPECT_FALSE(small.cold_start);
  std::printf("1000 B next: tx %lld, rx %lld bytes\n", (long long)small.net_tx_bytes, (long long)small.net_rx_bytes);
  EXPECT_GE(small.net_tx_bytes, 1000);
  EXPECT_LT(small.net_tx_bytes, 10'000);
}

TEST_F(network_test, two_sandboxes_at_once_report_only_their_own_bytes) {
  auto fn = spec_of("net-send", "functions.net_send", proto::NetworkPolicy::loopback);
  auto big = start(*exec_, fn, {{"bytes", 8 * megabyte}});
  auto small = start(*exec_, fn, {{"bytes", 64 * 1024}});
  auto b = big.get(), s = small.get();
  ASSERT_EQ(b.status, proto::Status::ok) << b.error;
  ASSERT_EQ(s.status, proto::Status::ok) << s.error;
  ASSERT_NE(b.sandbox, s.sandbox);
  std::printf("at once: 8 MiB: tx %lld rx %lld; 64 KiB: tx %lld rx %lld bytes\n", (long long)b.net_tx_bytes,
              (long long)b.net_rx_bytes, (long long)s.net_tx_bytes, (long long)s.net_rx_bytes);
  EXPECT_GE(b.net_tx_bytes, 8 * megabyte);
  EXPECT_LT(b.net_tx_bytes, 8 * megabyte * 11 / 10);
  EXPECT_GE(s.net_tx_bytes, 64 * 1024);
  EXPECT_LT(s.net_tx_bytes, 64 * 1024 * 3 / 2);
  EXPECT_LT(s.net_rx_bytes, 64 * 1024 * 3 / 2);
}

TEST_F(network_test, an_allow_list_lets_its_entries_through_and_refuses_the_rest_with_eperm) {
  listener listed, unlisted;
  auto fn = spec_of("net-connect", "functions.net_connect", proto::NetworkPolicy::allow_list,
                    {"127.0.0.1:" + std::to_string(listed.port)});
  outcome o;
  EXPECT_EQ(connect_result(fn, {{"port", listed.port}}, &o), "ok");
  EXPECT_EQ(o.net_refused, 0);
  EXPECT_GT(o.net_tx_bytes, 0);  // the handshake
  EXPECT_EQ(connect_result(fn, {{"port", unlisted.port}}, &o), "EPERM");
  EXPECT_EQ(o.net_refused, 1);
  EXPECT_EQ(connect_result(fn, {{"port", unlisted.port}, {"udp", true}}, &o), "EPERM");
  EXPECT_EQ(o.net_refused, 1);
  EXPECT_EQ(connect_result(fn, {{"host", "::1"}, {"port", listed.port}}, &o), "EPERM");
  // The sandbox shares the host's network: what is listed is the host's.
  listener target;
  auto send = spec_of("net-send-listed", "functions.net_send", proto::NetworkPolicy::allow_list,
                      {"127.0.0.1:" + std::to_string(target.port)});
  auto f = start(*exec_, send, {{"bytes", megabyte}, {"port", target.port}});
  int peer = ::accept4(target.fd, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(peer, 0);
  char sink[64 * 1024];
  int64_t got = 0;
  for (ssize_t n; (n = ::recv(peer, sink, sizeof sink, 0)) > 0;) got += n;
  ::close(peer);
  auto sent = f.get();
  ASSERT_EQ(sent.status, proto::Status::ok) << sent.error;
  EXPECT_EQ(got, megabyte);
  std::printf("1 MiB sent to the host's listener: tx %lld, rx %lld bytes\n", (long long)sent.net_tx_bytes,
              (long long)sent.net_rx_bytes);
  EXPECT_GE(sent.net_tx_bytes, megabyte);
}

// On the host's network, an allow-list sandbox may not take a port: it would serve from the
// host what its list does not name. Binding port 0, as a client may, still works.
TEST_F(network_test, an_allow_list_sandbox_cannot_bind_a_host_port) {
  auto fn = spec_of("net-bind", "functions.net_bind", proto::NetworkPolicy::allow_list, {"127.0.0.1:9"});
  outcome o;
  EXPECT_EQ(connect_result(fn, {{"port", 18080}}, &o), "EPERM");
  EXPECT_EQ(o.net_refused, 1);
  EXPECT_EQ(connect_result(fn, {{"host", "::"}, {"port", 18080}}), "EPERM");
  EXPECT_EQ(connect_result(fn, {{"port", 0}}, &o), "ok");
  EXPECT_EQ(o.net_refused, 0);
  // A loopback sandbox's network is its own: it binds what it likes.
  auto own = spec_of("net-bind-own", "functions.net_bind", proto::NetworkPolicy::loopback);
  EXPECT_EQ(connect_result(own, {{"port", 18080}}), "ok");
}

TEST_F(network_test, a_bad_allow_list_entry_fails_the_invocation_clearly) {
  auto fn = spec_of("net-connect", "functions.net_connect", proto::NetworkPolicy::allow_list, {"example.com:443"});
  auto o = invoke(fn, {{"port", 1}});
  EXPECT_EQ(o.status, proto::Status::error);
  EXPECT_NE(o.error.find("example.com is not an IPv4 or IPv6 address"), std::string::npos) << o.error;
}

TEST_F(network_test, policy_none_refuses_even_its_own_loopback) {
  auto fn = spec_of("net-connect", "functions.net_connect", proto::NetworkPolicy::none);
  outcome o;
  EXPECT_EQ(connect_result(fn, {{"port", 9}}, &o), "EPERM");
  EXPECT_EQ(o.net_refused, 1);
  EXPECT_EQ(connect_result(fn, {{"host", "::1"}, {"port", 9}, {"udp", true}}, &o), "EPERM");
  EXPECT_EQ(o.net_refused, 1);
  auto send = spec_of("net-send", "functions.net_send", proto::NetworkPolicy::none);
  auto s = invoke(send, {{"bytes", 10}});
  EXPECT_EQ(s.status, proto::Status::error);  // its connect raised PermissionError
  EXPECT_NE(s.error.find("PermissionError"), std::string::npos) << s.error;
  EXPECT_EQ(s.net_refused, 1);
}

TEST_F(network_test, policy_loopback_reaches_only_its_own_loopback) {
  auto fn = spec_of("net-connect", "functions.net_connect", proto::NetworkPolicy::loopback);
  outcome o;
  EXPECT_EQ(connect_result(fn, {{"port", 9}}, &o), "ECONNREFUSED");  // allowed: nobody listens there
  EXPECT_EQ(o.net_refused, 0);
  EXPECT_EQ(connect_result(fn, {{"host", "192.0.2.1"}, {"port", 80}}, &o), "EPERM");
  EXPECT_EQ(o.net_refused, 1);
}

TEST_F(network_test, without_bpf_allow_lists_are_refused_and_private_loopbacks_are_still_counted) {
  executor no_bpf(options(false));
  listener listed;
  auto fn = spec_of("net-connect", "functions.net_connect", proto::NetworkPolicy::allow_list,
                    {"127.0.0.1:" + std::to_string(listed.port)});
  auto o = invoke(no_bpf, fn, {{"port", listed.port}});
  EXPECT_EQ(o.status, proto::Status::error);
  EXPECT_NE(o.error.find("allow-list cannot be enforced"), std::string::npos) << o.error;
  // none and loopback: a network namespace of the sandbox's own, whose loopback's counters
  // are its traffic (headers included, as with BPF).
  auto send = spec_of("net-send", "functions.net_send", proto::NetworkPolicy::none);
  auto s = invoke(no_bpf, send, {{"bytes", megabyte}});
  ASSERT_EQ(s.status, proto::Status::ok) << s.error;
  std::printf("without BPF, 1 MiB sent to itself: tx %lld, rx %lld bytes\n", (long long)s.net_tx_bytes,
              (long long)s.net_rx_bytes);
  EXPECT_GE(s.net_tx_bytes, megabyte);
  EXPECT_GE(s.net_rx_bytes, megabyte);
  EXPECT_LT(s.net_tx_bytes, megabyte * 11 / 10);
  auto none = spec_of("net-connect-none", "functions.net_connect", proto::NetworkPolicy::none);
  EXPECT_EQ(output_of(invoke(no_bpf, none, {{"port", listed.port}}))["result"], "ECONNREFUSED");
}

}  // namespace
}  // namespace fnmesh::node
