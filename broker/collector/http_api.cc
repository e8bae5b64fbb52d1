#include "broker/collector/http_api.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <atomic>
#include <expected>
#include <optional>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/log.h"

namespace fnmesh::collector {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr size_t target_limit = 8 * 1024;
constexpr size_t fields_limit = 8 * 1024;
constexpr size_t body_limit = 64 * 1024;  // a GET carries none
constexpr std::string_view json_type = "application/json";
constexpr std::string_view metrics_type = "text/plain; version=0.0.4";

std::string_view sv(beast::string_view s) noexcept { return {s.data(), s.size()}; }
beast::string_view bsv(std::string_view s) noexcept { return {s.data(), s.size()}; }

std::string error_json(const std::string& reason) {
  return nlohmann::json{{"error", reason}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A path or one query name or value: %XX decoded. '+' stays '+' (RFC 3986; only HTML
// forms make it a space), so a time's offset like +01:00 arrives as written. Unexpected:
// the bad escape.
std::expected<std::string, std::string> decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
    } else {
      const int hi = i + 1 < s.size() ? hex_digit(s[i + 1]) : -1;
      const int lo = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
      if (hi < 0 || lo < 0) return std::unexpected(std::string(s.substr(i, 3)));
      out += char(hi * 16 + lo);
      i += 2;
    }
  }
  return out;
}

// "a=1&b=x%20y&a" -> {a,1} {b,"x y"} {a,""}, in order.
std::expected<query_params, std::string> parse_query(std::string_view query) {
  query_params params;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    auto name = decode(pair.substr(0, eq));
    if (!name) return std::unexpected(name.error());
    auto value = decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (!value) return std::unexpected(value.error());
    params.emplace_back(std::move(*name), std::move(*value));
  }
  return params;
}

size_t fields_bytes(const bhttp::fields& fields) {
  size_t n = 0;
  for (const auto& f : fields) n += f.name_string().size() + f.value().size() + 4;  // ": ", CRLF
  return n;
}

struct reply {
  int status = 200;
  std::string body;
  std::string_view content_type = json_type;
};

}  // namespace

namespace detail {

struct http_api_state {
  http_api_state(http_api::handler h, const api_keys* t, std::function<std::string()> r)
      : handle(std::move(h)), tokens(t), render_metrics(std::move(r)) {}

  void accept();
  reply answer(const bhttp::request<bhttp::string_body>& req);  // I/O thread

  http_api::handler handle;
  const api_keys* tokens;
  std::function<std::string()> render_metrics;
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  uint16_t port = 0;
  std::string endpoint;
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> unauthorized{0};
  std::thread thread;  // started last, once listening
};

}  // namespace detail

namespace {

// One client connection: reads a whole request (within the limits), answers it, and
// reads the next one while the client keeps the connection alive.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, detail::http_api_state& api) : stream_(std::move(socket)), api_(api) {}

  void read() {
    parser_.emplace();
    parser_->header_limit(target_limit + fields_limit);  // each is checked on its own below
    parser_->body_limit(body_limit);
    stream_.expires_after(60s);  // an idle keep-alive connection is closed
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

 private:
  void on_read(beast::error_code ec) {
    if (ec) {
      // A request Beast refuses is answered, then the connection closes; a closed or idle
      // connection just ends.
      const bool refused = ec.category() == beast::error_code(bhttp::error::bad_target).category() &&
                           ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
      if (!refused) return close();
      if (ec == bhttp::error::header_limit)
        return send({431, error_json("request header over " + std::to_string(fields_limit) + " bytes")}, false, 11);
      if (ec == bhttp::error::body_limit)
        return send({413, error_json("request body over " + std::to_string(body_limit) +
                                     " bytes (the API takes none)")},
                    false, 11);
      return send({400, error_json("malformed HTTP request: " + ec.message())}, false, 11);
    }
    const auto& req = parser_->get();
    reply r;
    try {
      r = api_.answer(req);
    } catch (const std::exception& e) {
      logger("collector")->error("HTTP {} failed: {}", sv(req.target()), e.what());
      r = {500, error_json(std::string("internal error: ") + e.what())};
    }
    send(std::move(r), req.keep_alive(), req.version());
  }

  void send(reply r, bool keep_alive, unsigned version) {
    ++api_.requests;
    if (r.status == 401) ++api_.unauthorized;
    res_ = {};
    res_.version(version);
    res_.result(unsigned(r.status));
    res_.set(bhttp::field::server, "fnmesh-collector");
    res_.set(bhttp::field::content_type, bsv(r.content_type));
    if (r.status == 401) res_.set(bhttp::field::www_authenticate, "Bearer realm=\"fnmesh\"");
    if (r.status == 405) res_.set(bhttp::field::allow, "GET");
    res_.keep_alive(keep_alive);
    res_.body() = std::move(r.body);
    res_.prepare_payload();
    stream_.expires_after(30s);
    bhttp::async_write(stream_, res_, [self = shared_from_this(), keep_alive](beast::error_code ec, size_t) {
      if (ec) return self->close();
      if (!keep_alive) return self->linger_close();
      self->read();
    });
  }

  void linger_close() {
    // Half-close, then read and discard what the client still sends (a body we refused),
    // so that closing does not reset the connection before it reads our answer.
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(2s);
    discard();
  }

  void discard() {
    stream_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->discard();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> res_;
  detail::http_api_state& api_;
  std::array<char, 4096> scratch_{};
};

}  // namespace

void detail::http_api_state::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      logger("collector")->warn("HTTP accept failed: {}", ec.message());
    } else {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<session>(std::move(socket), *this)->read();
    }
    accept();
  });
}

reply detail::http_api_state::answer(const bhttp::request<bhttp::string_body>& req) {
  const std::string_view target = sv(req.target());
  if (target.size() > target_limit)
    return {414, error_json("request target over " + std::to_string(target_limit) + " bytes")};
  if (fields_bytes(req) > fields_limit)
    return {431, error_json("request header over " + std::to_string(fields_limit) + " bytes")};
  const size_t question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const bool is_get = req.method() == bhttp::verb::get;
  const auto not_get = [&] {
    return reply{405, error_json("method " + std::string(sv(req.method_string())) + " not allowed: only GET")};
  };
  if (path == "/metrics") {
    if (!is_get) return not_get();
    return {200, render_metrics(), metrics_type};
  }
  if (!path.starts_with("/v1/"))
    return {404, error_json("no such path '" + std::string(path) + "' (the API is under /v1/, metrics at /metrics)")};
  if (!is_get) return not_get();

  std::optional<std::string> tenant;
  if (tokens) tenant = tokens->tenant_of(sv(req[bhttp::field::authorization]));
  if (!tenant) return {401, error_json("missing or unknown token (Authorization: Bearer <token>)")};
  auto params = parse_query(question == std::string_view::npos ? std::string_view() : target.substr(question + 1));
  if (!params) return {400, error_json("bad %-escape '" + params.error() + "' in the query")};
  auto decoded_path = decode(path);
  if (!decoded_path) return {400, error_json("bad %-escape '" + decoded_path.error() + "' in the path")};
  const caller who{.admin = *tenant == "admin", .tenant = std::move(*tenant)};
  auto r = handle(who, *decoded_path, *params);
  return {r.status, std::move(r.body)};
}

http_api::http_api(const std::string& listen, handler handle, const api_keys* tokens,
                   std::function<std::string()> render_metrics)
    : impl_(std::make_unique<detail::http_api_state>(std::move(handle), tokens, std::move(render_metrics))) {
  const auto fail = [&](const std::string& why) {
    return std::runtime_error("cannot serve the HTTP API on " + listen + ": " + why);
  };
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) throw fail("expected HOST:PORT");
  std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    throw fail("bad port");
  beast::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw fail("bad address '" + host + "' (want an IPv4 address or [IPv6])");

  auto& s = *impl_;
  const tcp::endpoint where(address, uint16_t(std::stoul(port)));
  s.acceptor.open(where.protocol(), ec);
  if (!ec) s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(where, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw fail(ec.message());
  s.port = s.acceptor.local_endpoint().port();
  s.endpoint = "http://" + (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
               std::to_string(s.port);
  s.accept();
  s.thread = std::thread([&s] { s.ioc.run(); });
}

http_api::~http_api() {
  impl_->ioc.stop();
  impl_->thread.join();
}

uint16_t http_api::port() const noexcept { return impl_->port; }
const std::string& http_api::endpoint() const noexcept { return impl_->endpoint; }
uint64_t http_api::requests() const noexcept { return impl_->requests; }
uint64_t http_api::unauthorized() const noexcept { return impl_->unauthorized; }

}  // namespace fnmesh::collector
