#include "common/metrics_endpoint.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <stdexcept>

namespace {

// Sends `request` to 127.0.0.1:port and returns everything the server wrote before closing.
std::string exchange(uint16_t port, const std::string& request) {
  fnmesh::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "connect failed";
  ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL);
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) reply.append(buf, size_t(n));
  return reply;
}

std::string body_of(const std::string& reply) { return reply.substr(reply.find("\r\n\r\n") + 4); }

TEST(metrics_endpoint, answers_get_metrics_with_what_render_returns_each_time) {
  std::atomic<int> scrapes = 0;
  fnmesh::metrics_endpoint endpoint("127.0.0.1:0", [&] {
    return "# TYPE x counter\nx " + std::to_string(++scrapes) + "\n";
  });
  ASSERT_GT(endpoint.port(), 0);
  EXPECT_EQ(endpoint.url(), "http://127.0.0.1:" + std::to_string(endpoint.port()) + "/metrics");
  const auto first = exchange(endpoint.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(first.starts_with("HTTP/1.1 200 OK\r\n")) << first;
  EXPECT_NE(first.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << first;
  EXPECT_NE(first.find("Content-Length: 21\r\n"), std::string::npos) << first;
  EXPECT_EQ(body_of(first), "# TYPE x counter\nx 1\n");
  EXPECT_EQ(body_of(exchange(endpoint.port(), "GET /metrics?name[]=x HTTP/1.0\r\n\r\n")), "# TYPE x counter\nx 2\n");
}

TEST(metrics_endpoint, another_path_is_404_another_method_405_garbage_400) {
  fnmesh::metrics_endpoint endpoint("127.0.0.1:0", [] { return std::string("x 1\n"); });
  EXPECT_TRUE(exchange(endpoint.port(), "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 Not Found\r\n"));
  const auto post = exchange(endpoint.port(), "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_TRUE(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")) << post;
  EXPECT_NE(post.find("Allow: GET\r\n"), std::string::npos) << post;
  EXPECT_TRUE(exchange(endpoint.port(), "hello\r\n\r\n").starts_with("HTTP/1.1 400 Bad Request\r\n"));
  // Still answering after all that.
  EXPECT_EQ(body_of(exchange(endpoint.port(), "GET /metrics HTTP/1.1\r\n\r\n")), "x 1\n");
}

TEST(metrics_endpoint, a_taken_port_or_a_bad_address_is_one_clear_line) {
  fnmesh::metrics_endpoint first("127.0.0.1:0", [] { return std::string(); });
  const std::string taken = "127.0.0.1:" + std::to_string(first.port());
  try {
    fnmesh::metrics_endpoint second(taken, [] { return std::string(); });
    FAIL() << "a second endpoint bound " << taken;
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot serve /metrics on " + taken + ": Address already in use");
  }
  EXPECT_THROW(fnmesh::metrics_endpoint("127.0.0.1", [] { return std::string(); }), std::runtime_error);
  EXPECT_THROW(fnmesh::metrics_endpoint("127.0.0.1:http", [] { return std::string(); }), std::runtime_error);
}

TEST(prometheus_escape, escapes_backslash_quote_and_newline_only) {
  EXPECT_EQ(fnmesh::prometheus_escape("plain-name_1.x"), "plain-name_1.x");
  EXPECT_EQ(fnmesh::prometheus_escape("a\\b\"c\nd\te"), "a\\\\b\\\"c\\nd\te");
}

}  // namespace

TEST(append_metric, writes_help_type_and_the_sample_in_text_format) {
  std::string out;
  fnmesh::append_metric(out, "fnmesh_x_total", "counter", "Things done.", 42);
  fnmesh::append_metric_header(out, "fnmesh_y", "gauge", "Things now.");
  EXPECT_EQ(out,
            "# HELP fnmesh_x_total Things done.\n# TYPE fnmesh_x_total counter\nfnmesh_x_total 42\n"
            "# HELP fnmesh_y Things now.\n# TYPE fnmesh_y gauge\n");
}
