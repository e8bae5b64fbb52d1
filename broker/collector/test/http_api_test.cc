#include "broker/collector/http_api.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tests/support/http_exchange.h"

namespace c = fnmesh::collector;
using fnmesh::test::http_call;
using json = nlohmann::json;

namespace {

const std::string tenant_auth = "Authorization: Bearer acme-token-0123456789\r\n";
const std::string admin_auth = "Authorization: Bearer admin-token-0123456789\r\n";

// An http_api whose handler echoes what it was given; /v1/teapot answers 418.
struct echo_api {
  explicit echo_api(const fnmesh::api_keys* keys = &tokens, const std::string& listen = "127.0.0.1:0")
      : api(listen,
            [this](const c::caller& who, std::string_view path, const c::query_params& params) {
              ++calls;
              json echo{{"admin", who.admin}, {"tenant", who.tenant}, {"path", path}, {"params", json::array()}};
              for (const auto& [name, value] : params) echo["params"].push_back({name, value});
              return c::api_response{path == "/v1/teapot" ? 418 : 200, echo.dump()};
            },
            keys, [] { return std::string("# TYPE fnmesh_x counter\nfnmesh_x 7\n"); }) {}

  fnmesh::test::http_reply get(const std::string& target, const std::string& headers = tenant_auth) {
    return http_call(api.port(), "GET", target, {}, true, headers);
  }

  static inline const fnmesh::api_keys tokens = fnmesh::api_keys::parse(
      "admin: [admin-token-0123456789]\nacme: [acme-token-0123456789]\n", "tokens.yml");
  std::atomic<int> calls = 0;
  c::http_api api;
};

json error_of(const fnmesh::test::http_reply& r) {
  EXPECT_EQ(r.headers.at("content-type"), "application/json");
  return json::parse(r.body).at("error");
}

TEST(http_api, no_token_or_an_unknown_one_is_401_and_the_handler_is_not_called) {
  echo_api e;
  for (const std::string& headers :
       {std::string(), std::string("Authorization: Bearer not-a-token-0123456789\r\n"),
        std::string("Authorization: Basic acme-token-0123456789\r\n")}) {
    const auto r = e.get("/v1/usage", headers);
    EXPECT_EQ(r.status, 401) << headers;
    EXPECT_EQ(r.headers.at("www-authenticate"), "Bearer realm=\"fnmesh\"");
    EXPECT_EQ(error_of(r), "missing or unknown token (Authorization: Bearer <token>)");
  }
  EXPECT_EQ(e.calls, 0);
  EXPECT_EQ(e.api.unauthorized(), 3u);
  EXPECT_EQ(e.api.requests(), 3u);
}

TEST(http_api, without_tokens_configured_every_query_is_401) {
  echo_api e(nullptr);
  EXPECT_EQ(e.get("/v1/usage", admin_auth).status, 401);
  EXPECT_EQ(e.calls, 0);
  EXPECT_EQ(e.get("/metrics", "").status, 200);
}

TEST(http_api, a_tenant_token_reaches_the_handler_as_that_tenant_with_its_status) {
  echo_api e;
  const auto r = e.get("/v1/activations/01JDQ4Z8ZC9Q0M1Y6T3V5W7X9A");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.at("content-type"), "application/json");
  EXPECT_EQ(json::parse(r.body), json::parse(R"({"admin":false,"tenant":"acme",
      "path":"/v1/activations/01JDQ4Z8ZC9Q0M1Y6T3V5W7X9A","params":[]})"));
  EXPECT_EQ(e.get("/v1/teapot").status, 418);
  EXPECT_EQ(e.calls, 2);
  EXPECT_EQ(e.api.unauthorized(), 0u);
}

TEST(http_api, the_admin_token_makes_an_admin_caller) {
  echo_api e;
  const auto r = e.get("/v1/usage", admin_auth);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body).at("admin"), true);
}

TEST(http_api, query_parameters_are_decoded_and_passed_in_order_repeats_included) {
  echo_api e;
  const auto r = e.get(
      "/v1/usage?function=hello%20world&since=2026-11-27T10:00+01:00&function=x%2fy%2B1&flag&&=v&by=");
  ASSERT_EQ(r.status, 200) << r.body;
  const auto echo = json::parse(r.body);
  EXPECT_EQ(echo.at("path"), "/v1/usage");
  // '+' stays '+': a time's offset typed into curl as is arrives intact.
  EXPECT_EQ(echo.at("params"), json::parse(R"([["function","hello world"],
      ["since","2026-11-27T10:00+01:00"],["function","x/y+1"],["flag",""],["","v"],["by",""]])"));
  // The path is decoded too: an id the CLI percent-encodes arrives as the id.
  EXPECT_EQ(json::parse(e.get("/v1/activations/01AB%2Dx").body).at("path"), "/v1/activations/01AB-x");
}

TEST(http_api, a_bad_percent_escape_is_400_naming_it) {
  echo_api e;
  auto r = e.get("/v1/usage?function=a%zzb");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r), "bad %-escape '%zz' in the query");
  r = e.get("/v1/usage?fun%4");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r), "bad %-escape '%4' in the query");
  EXPECT_EQ(e.calls, 0);
}

TEST(http_api, only_get_is_allowed) {
  echo_api e;
  for (const std::string target : {"/v1/usage", "/metrics"}) {
    const auto r = http_call(e.api.port(), "POST", target, "{}", true, tenant_auth);
    EXPECT_EQ(r.status, 405) << target;
    EXPECT_EQ(r.headers.at("allow"), "GET");
    EXPECT_EQ(error_of(r), "method POST not allowed: only GET");
  }
  EXPECT_EQ(e.calls, 0);
}

TEST(http_api, an_unknown_path_is_404) {
  echo_api e;
  for (const std::string target : {"/", "/v1", "/v2/usage", "/metrics/x"}) {
    const auto r = e.get(target);
    EXPECT_EQ(r.status, 404) << target;
    EXPECT_EQ(error_of(r), "no such path '" + target + "' (the API is under /v1/, metrics at /metrics)");
  }
  EXPECT_EQ(e.calls, 0);
}

TEST(http_api, metrics_need_no_token) {
  echo_api e;
  const auto r = e.get("/metrics", "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.at("content-type"), "text/plain; version=0.0.4");
  EXPECT_EQ(r.body, "# TYPE fnmesh_x counter\nfnmesh_x 7\n");
}

TEST(http_api, oversized_requests_are_refused) {
  echo_api e;
  EXPECT_EQ(e.get("/v1/usage?x=" + std::string(9000, 'a')).status, 414);
  EXPECT_EQ(e.get("/v1/usage", tenant_auth + "X-Big: " + std::string(9000, 'a') + "\r\n").status, 431);
  EXPECT_EQ(e.get("/v1/usage", tenant_auth + "X-Big: " + std::string(20000, 'a') + "\r\n").status, 431);
  const auto r = http_call(e.api.port(), "GET", "/v1/usage", {}, false, tenant_auth, 100000);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(error_of(r), "request body over 65536 bytes (the API takes none)");
  EXPECT_EQ(e.calls, 0);
}

TEST(http_api, port_zero_picks_a_free_port_on_ipv4_and_ipv6) {
  echo_api v4;
  EXPECT_GT(v4.api.port(), 0);
  EXPECT_EQ(v4.api.endpoint(), "http://127.0.0.1:" + std::to_string(v4.api.port()));
  echo_api v6(&echo_api::tokens, "[::1]:0");
  EXPECT_EQ(v6.api.endpoint(), "http://[::1]:" + std::to_string(v6.api.port()));
}

TEST(http_api, a_taken_port_or_a_bad_address_is_one_clear_line) {
  echo_api first;
  const std::string taken = "127.0.0.1:" + std::to_string(first.api.port());
  const auto error = [](const std::string& listen) -> std::string {
    try {
      c::http_api api(listen, {}, nullptr, {});
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error(taken), "cannot serve the HTTP API on " + taken + ": Address already in use");
  EXPECT_EQ(error("127.0.0.1"), "cannot serve the HTTP API on 127.0.0.1: expected HOST:PORT");
  EXPECT_EQ(error("127.0.0.1:70000"), "cannot serve the HTTP API on 127.0.0.1:70000: bad port");
  EXPECT_EQ(error("collector:7701"),
            "cannot serve the HTTP API on collector:7701: bad address 'collector' (want an IPv4 address or [IPv6])");
}

// One client connection kept open across requests.
class connection {
 public:
  explicit connection(uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const timeval timeout{5, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }

  // Sends `request` and reads one response (by its Content-Length); "" if none came.
  std::string exchange(const std::string& request) {
    ::send(fd_.get(), request.data(), request.size(), MSG_NOSIGNAL);
    while (buf_.find("\r\n\r\n") == std::string::npos)
      if (!fill()) return "";
    const size_t head = buf_.find("\r\n\r\n") + 4;
    const size_t length_at = buf_.find("Content-Length: ");
    if (length_at == std::string::npos || length_at > head) return "";
    const size_t total = head + std::stoul(buf_.substr(length_at + 16));
    while (buf_.size() < total)
      if (!fill()) return "";
    std::string reply = buf_.substr(0, total);
    buf_.erase(0, total);
    return reply;
  }

  bool closed_by_server() {
    char c;
    return ::recv(fd_.get(), &c, 1, 0) == 0;
  }

 private:
  bool fill() {
    char chunk[4096];
    const ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n > 0) buf_.append(chunk, size_t(n));
    return n > 0;
  }

  fnmesh::unique_fd fd_;
  std::string buf_;
};

TEST(http_api, keeps_the_connection_alive_between_requests_and_closes_it_when_destroyed) {
  auto e = std::make_unique<echo_api>();
  connection client(e->api.port());
  const std::string request = "GET /v1/usage?n=1 HTTP/1.1\r\nHost: x\r\n" + tenant_auth + "\r\n";
  const auto first = client.exchange(request);
  EXPECT_TRUE(first.starts_with("HTTP/1.1 200 OK\r\n")) << first;
  EXPECT_EQ(client.exchange(request), first);
  EXPECT_TRUE(client.exchange("GET /metrics HTTP/1.1\r\n\r\n").ends_with("fnmesh_x 7\n"));
  EXPECT_EQ(e->calls, 2);
  EXPECT_EQ(e->api.requests(), 3u);
  e.reset();
  EXPECT_TRUE(client.closed_by_server());
}

TEST(http_api, a_malformed_request_is_400_and_the_connection_closes) {
  echo_api e;
  connection client(e.api.port());
  const auto reply = client.exchange("hello world\r\n\r\n");
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 400 Bad Request\r\n")) << reply;
  EXPECT_TRUE(reply.ends_with("{\"error\":\"malformed HTTP request: bad target\"}")) << reply;
  EXPECT_TRUE(client.closed_by_server());
}

}  // namespace
