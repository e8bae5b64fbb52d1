#include "trigger-adapters/http/server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "broker/client/collector_client.h"
#include "broker/client/reply_router.h"
#include "common/errc.h"
#include "common/log.h"
#include "common/ulid.h"
#include "trigger-adapters/http/callback.h"
#include "trigger-adapters/http/routing.h"

namespace fnmesh::http_adapter {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr size_t header_limit = 16 * 1024;
constexpr size_t small_body_limit = 64 * 1024;  // anything that is not an invocation
constexpr std::string_view json_type = "application/json";

std::shared_ptr<spdlog::logger> log() { return logger("http"); }

std::string_view sv(beast::string_view s) noexcept { return {s.data(), s.size()}; }
beast::string_view bsv(std::string_view s) noexcept { return {s.data(), s.size()}; }

struct reply {
  int status = 0;
  std::string body;
};

// What a Result becomes over HTTP, for a waiting caller and for a callback alike.
callback_message result_message(const proto::Result& r, std::string_view function) {
  callback_message m{.invocation_id = std::string(proto::view(r.invocation_id())),
                     .function = std::string(function),
                     .function_status = http_status(r.status()),
                     .fnmesh_status = proto::status_name(r.status())};
  if (r.status() == proto::Status::ok) {
    auto type = proto::view(r.content_type());
    m.content_type = type.empty() ? "application/octet-stream" : std::string(type);
    m.body = std::string(proto::text(proto::bytes(r.output())));
  } else {
    m.content_type = json_type;
    m.body = error_json(m.fnmesh_status, {{"message", proto::view(r.error())},
                                          {"invocation_id", m.invocation_id},
                                          {"function", function}});
  }
  return m;
}

// GET /invocations/<id>: ActivationQuery requests to the collector, pipelined on one
// DEALER. Owns that socket and the thread that alone uses it; answers are posted to the
// I/O thread.
class activation_queries {
 public:
  using done_fn = std::function<void(reply)>;

  activation_queries(zmq::context_t& ctx, const std::string& endpoint,
                     std::chrono::milliseconds timeout, asio::io_context& ioc)
      : client_(ctx, endpoint), timeout_(timeout), ioc_(ioc), thread_([this] { loop(); }) {}
  ~activation_queries() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  void submit(std::string id, std::string tenant, done_fn done) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back({std::move(id), std::move(tenant), std::move(done), {}});
    }
    wake_.notify_one();
  }

 private:
  struct job {
    std::string id;
    std::string tenant;  // the caller's: another tenant's invocation is not found
    done_fn done;
    std::chrono::steady_clock::time_point deadline;
  };

  void finish(job& j, reply r) {
    asio::post(ioc_, [done = std::move(j.done), r = std::move(r)]() mutable { done(std::move(r)); });
  }

  void loop() {
    std::unordered_map<uint64_t, job> outstanding;
    uint64_t next_id = 1;
    for (;;) {
      std::deque<job> fresh;
      {
        std::unique_lock lock(mutex_);
        if (outstanding.empty())
          wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        fresh.swap(queue_);
      }
      for (auto& j : fresh) {
        flatbuffers::FlatBufferBuilder b;
        auto query = proto::CreateActivationQueryDirect(b, j.id.c_str());
        b.Finish(proto::CreateCollectorRequest(b, next_id, proto::RequestBody::ActivationQuery,
                                               query.Union()));
        auto sent = client_.send(proto::bytes(b));
        // The client queues nothing while unconnected (start-up, collector restart).
        for (int retry = 0; !sent && sent.error() == errc::unavailable && retry < 40; ++retry) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          sent = client_.send(proto::bytes(b));
        }
        if (!sent) {
          finish(j, {503, error_json("collector_unavailable", {{"message", sent.error().message()}})});
          continue;
        }
        j.deadline = std::chrono::steady_clock::now() + timeout_;
        outstanding.emplace(next_id++, std::move(j));
      }
      if (outstanding.empty()) continue;
      if (auto r = client_.receive(20ms)) {
        const auto& rep = r->get();
        auto it = outstanding.find(rep.request_id());
        if (it != outstanding.end()) {
          finish(it->second, answer(it->second, rep));
          outstanding.erase(it);
        }
      }
      const auto now = std::chrono::steady_clock::now();
      for (auto it = outstanding.begin(); it != outstanding.end();) {
        if (it->second.deadline > now) {
          ++it;
          continue;
        }
        finish(it->second, {503, error_json("collector_unavailable",
                                            {{"message", "no answer from the billing collector"}})});
        it = outstanding.erase(it);
      }
    }
  }

  static reply answer(const job& j, const proto::CollectorReply& rep) {
    if (const auto* report = rep.body_as_ActivationReport()) {
      auto body = activation_json(j.id, *report, j.tenant);
      if (body.empty()) return {404, error_json("no_such_invocation", {{"id", j.id}})};
      return {200, std::move(body)};
    }
    if (const auto* err = rep.body_as_ErrorReply())
      return {502, error_json("collector_error", {{"message", proto::view(err->message())}})};
    return {502, error_json("collector_error", {{"message", "unexpected reply"}})};
  }

  broker::collector_client client_;
  std::chrono::milliseconds timeout_;
  asio::io_context& ioc_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<job> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

// POST /async-function: a 202 promises that the invocation is stored, so these wait for
// the stream's ack — on this thread, never on the I/O thread. Owns the thread and its
// queue; outcomes are posted to the I/O thread.
class async_publisher {
 public:
  using done_fn = std::function<void(result<broker::published>)>;

  async_publisher(broker::invoker& invoker, asio::io_context& ioc)
      : invoker_(invoker), ioc_(ioc), thread_([this] { loop(); }) {}
  ~async_publisher() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  // `body` backs req.payload until the publish is done.
  void submit(broker::invocation_request req, std::string body, done_fn done) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back({std::move(req), std::move(body), std::move(done)});
    }
    wake_.notify_one();
  }

 private:
  struct job {
    broker::invocation_request req;
    std::string body;
    done_fn done;
  };

  void loop() {
    for (;;) {
      std::deque<job> batch;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (stop_ && queue_.empty()) return;
        batch.swap(queue_);
      }
      for (auto& j : batch) {
        j.req.payload = {reinterpret_cast<const uint8_t*>(j.body.data()), j.body.size()};
        auto outcome = invoker_.invoke(j.req, /*async_publish=*/false);
        asio::post(ioc_, [done = std::move(j.done), outcome = std::move(outcome)]() mutable {
          done(std::move(outcome));
        });
      }
    }
  }

  broker::invoker& invoker_;
  asio::io_context& ioc_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<job> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

class session;

std::pair<std::string, uint16_t> split_host_port(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--listen wants host:port, got " + listen);
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  try {
    size_t used = 0;
    port = std::stoi(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
  }
  if (port < 0 || port > 65535) throw std::runtime_error("--listen: bad port in " + listen);
  return {host, uint16_t(port)};
}

}  // namespace

namespace detail {

struct server_state {
  server_state(server_options o, broker::function_registry& reg, broker::invoker& inv, zmq::context_t& zmq);

  void accept();
  void begin_drain();
  void finish_if_drained();
  void read_results();
  // I/O thread only:
  void invoke(const std::shared_ptr<session>& s, const route& r, const std::string& tenant,
              bhttp::request<bhttp::string_body>& req);
  void expect_callback(uint64_t correlation, callback_target to, const std::string& id,
                       const std::string& function);
  void answer_refusal(const std::shared_ptr<session>& s, const std::string& function,
                      std::error_code ec);
  void complete(const broker::result_message& m);
  void give_up(uint64_t correlation);
  void forget(uint64_t correlation);  // a sync call answered: no longer in flight
  // Invocations published here: until the collector stores one, GET shows it pending.
  void remember(const std::string& id, const std::string& tenant);
  reply lookup_answer(reply stored, const std::string& id, const std::string& tenant) const;
  std::string render_metrics() const {
    return metrics.render({.malformed_results = router->malformed(),
                           .unmatched_results = unmatched,
                           .waiting = waiting.size(),
                           .callbacks_pending = awaiting_callback.size(),
                           .callbacks_delivered = callbacks.delivered(),
                           .callbacks_failed = callbacks.failed(),
                           .callbacks_expired = callbacks_expired});
  }

  server_options opts;
  broker::function_registry& registry;
  broker::invoker& invoker;
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  asio::steady_timer drain_timer{ioc};
  std::unique_ptr<broker::reply_router> router;
  asio::posix::stream_descriptor router_fd{ioc};  // a dup of the ROUTER's ZMQ_FD
  std::string reply_endpoint;
  std::unique_ptr<activation_queries> queries;
  std::unique_ptr<async_publisher> publisher;

  // I/O thread only.
  struct waiting_call {
    std::shared_ptr<session> s;
    std::string invocation_id;
    std::string function_key;  // tenant.function
  };
  std::unordered_map<uint64_t, waiting_call> waiting;
  std::unordered_map<std::string, uint32_t> in_flight;  // sync calls waiting, by function key
  std::unordered_map<std::string, std::string> published;  // invocation id -> tenant
  std::deque<std::string> published_order;                   // oldest first, to bound it
  struct pending_callback {
    callback_target to;
    std::string invocation_id;
    std::string function;
    std::unique_ptr<asio::steady_timer> expiry;
  };
  std::unordered_map<uint64_t, pending_callback> awaiting_callback;
  callback_sender callbacks;
  uint64_t callbacks_expired = 0;
  uint64_t next_correlation = 1;
  size_t publishing = 0;  // async calls waiting for the stream's ack
  uint64_t unmatched = 0;
  request_metrics metrics;
  bool draining = false;
};

}  // namespace detail

namespace {

// One client connection: reads a request (header first, so limits are checked before the
// body arrives), answers it, and keeps the connection alive while the client wants it.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, detail::server_state& srv)
      : stream_(std::move(socket)), wait_timer_(srv.ioc), srv_(srv) {}

  void start() { read_header(); }

  void answer(int status, std::string body, std::string_view content_type,
              std::string_view call_id = {}, std::string_view fn_status = {}) {
    srv_.metrics.answered(status);
    res_ = {};
    res_.version(version_);
    res_.result(unsigned(status));
    res_.set(bhttp::field::server, "fnmesh-http");
    res_.set(bhttp::field::content_type, bsv(content_type));
    if (!call_id.empty()) res_.set("X-Call-Id", bsv(call_id));
    if (!fn_status.empty()) res_.set("X-Fnmesh-Status", bsv(fn_status));
    if (status == 401) res_.set(bhttp::field::www_authenticate, "Bearer realm=\"fnmesh\"");
    res_.keep_alive(keep_alive_);
    res_.body() = std::move(body);
    res_.prepare_payload();
    stream_.expires_after(30s);
    bhttp::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      if (!self->keep_alive_) return self->linger_close();
      self->read_header();
    });
  }

  void answer_json(int status, std::string body, std::string_view call_id = {},
                   std::string_view fn_status = {}) {
    answer(status, std::move(body), json_type, call_id, fn_status);
  }

  void wait_for_result(uint64_t correlation, std::chrono::milliseconds wait) {
    stream_.expires_never();
    wait_timer_.expires_after(wait);
    wait_timer_.async_wait([self = shared_from_this(), correlation](beast::error_code ec) {
      if (!ec) self->srv_.give_up(correlation);
    });
  }

  void on_result(const proto::Result& r) {
    wait_timer_.cancel();
    auto m = result_message(r, function_name_);
    answer(m.function_status, std::move(m.body), m.content_type, m.invocation_id, m.fnmesh_status);
  }

 private:
  void read_header() {
    parser_.emplace();
    parser_->header_limit(header_limit);
    // Set per endpoint once the header is known. (Not boost::none: Beast 1.74 compares the
    // Content-Length against an empty optional as if it were over the limit.)
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    stream_.expires_after(srv_.opts.idle);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                               self->on_header(ec);
                             });
  }

  void on_header(beast::error_code ec) {
    if (ec) {
      // A request Beast cannot parse gets a 400; a closed or idle connection just ends.
      if (ec != bhttp::error::end_of_stream &&
          ec.category() == beast::error_code(bhttp::error::bad_target).category()) {
        keep_alive_ = false;
        return answer_json(400, error_json("bad_request", {{"message", ec.message()}}));
      }
      return close();
    }
    auto& req = parser_->get();
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    route_ = parse_route(sv(req.method_string()), sv(req.target()));
    early_.reset();
    function_name_.clear();
    limit_ = small_body_limit;
    const bool invokes = route_.what == endpoint::invoke_sync || route_.what == endpoint::invoke_async;
    tenant_ = srv_.opts.tenant;
    if (srv_.opts.keys && (invokes || route_.what == endpoint::invocation)) {
      auto tenant = srv_.opts.keys->tenant_of(sv(req[bhttp::field::authorization]));
      if (tenant) tenant_ = std::move(*tenant);
      else early_ = reply{401, error_json("unauthorized", {{"message", "a valid API key is required: Authorization: Bearer <key>"}})};
    }
    if (invokes && !early_) {
      const auto& lim = srv_.invoker.payload_limits();
      limit_ = route_.what == endpoint::invoke_sync ? lim.sync_payload : lim.async_payload;
      function_name_ = route_.name;
      if (!broker::valid_name(route_.name))
        early_ = reply{400, error_json("invalid_function_name", {{"function", route_.name}})};
      else if (auto fn = srv_.registry.find(tenant_, route_.name); !fn)
        early_ = reply{404, error_json("no_such_function", {{"function", route_.name}})};
      else if (!http_enabled(fn->spec()))
        early_ = reply{403, error_json("http_trigger_disabled", {{"function", route_.name}})};
    }
    if (early_ && early_->status == 401) {  // nothing of the body is read
      keep_alive_ = false;
      return answer_json(early_->status, std::move(early_->body));
    }
    if (auto length = parser_->content_length(); length && *length > limit_) return too_large();
    parser_->body_limit(limit_);
    const bool expects_continue =
        beast::iequals(req[bhttp::field::expect], "100-continue") && !parser_->is_done();
    if (expects_continue && early_) {
      keep_alive_ = false;  // the client will not send the body
      return answer_json(early_->status, std::move(early_->body));
    }
    if (expects_continue) {
      continue_ = std::make_unique<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_,
                                                                       version_);
      return bhttp::async_write(stream_, *continue_,
                                [self = shared_from_this()](beast::error_code ec, size_t) {
                                  if (ec) return self->close();
                                  self->read_body();
                                });
    }
    read_body();
  }

  void read_body() {
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec == bhttp::error::body_limit) return self->too_large();
                        if (ec) return self->close();
                        self->dispatch();
                      });
  }

  void too_large() {
    keep_alive_ = false;
    const std::string limit = std::to_string(limit_);
    const std::string what = route_.what == endpoint::invoke_sync    ? "sync payload"
                             : route_.what == endpoint::invoke_async ? "async payload"
                                                                     : "request body";
    answer_json(413, error_json("payload_too_large",
                                {{"message", "the " + what + " limit is " + limit + " bytes"},
                                 {"limit_bytes", limit},
                                 {"function", function_name_}}));
  }

  void dispatch() {
    if (early_) return answer_json(early_->status, std::move(early_->body));
    auto& req = parser_->get();
    switch (route_.what) {
      case endpoint::healthz:
        return answer(200, "ok\n", "text/plain");
      case endpoint::metrics:
        return answer(200, srv_.render_metrics(), "text/plain; version=0.0.4");
      case endpoint::not_found:
        return answer_json(404, error_json("not_found", {{"path", sv(req.target())}}));
      case endpoint::method_not_allowed:
        return answer_json(405, error_json("method_not_allowed",
                                           {{"method", sv(req.method_string())}, {"path", sv(req.target())}}));
      case endpoint::invocation:
        if (!is_ulid(route_.name))
          return answer_json(404, error_json("no_such_invocation", {{"id", route_.name}}));
        srv_.queries->submit(route_.name, tenant_,
                             [self = shared_from_this(), id = route_.name, tenant = tenant_](reply r) {
                               r = self->srv_.lookup_answer(std::move(r), id, tenant);
                               self->answer_json(r.status, std::move(r.body));
                             });
        return;
      case endpoint::invoke_sync:
      case endpoint::invoke_async:
        return srv_.invoke(shared_from_this(), route_, tenant_, req);
    }
  }

  void linger_close() {
    // Half-close, then read and discard what the client still sends (the body we
    // refused) so that closing does not reset the connection before it reads our answer.
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(2s);
    discard();
  }

  void discard() {
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
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
  std::unique_ptr<bhttp::response<bhttp::empty_body>> continue_;
  asio::steady_timer wait_timer_;
  detail::server_state& srv_;
  route route_;
  std::string tenant_;          // the caller's, from its API key
  std::optional<reply> early_;  // decided from the header, sent once the body is read
  std::string function_name_;
  size_t limit_ = small_body_limit;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  std::array<char, 16384> scratch_{};
};

}  // namespace

detail::server_state::server_state(server_options o, broker::function_registry& reg, broker::invoker& inv,
                   zmq::context_t& zmq)
    : opts(std::move(o)), registry(reg), invoker(inv),
      callbacks(ioc, opts.callback_retries, opts.callback_backoff, [this] { finish_if_drained(); }) {
  auto [host, port] = split_host_port(opts.listen);
  beast::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("--listen: bad address '" + host + "'");
  tcp::endpoint where(address, port);
  acceptor.open(where.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(where, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + opts.listen + ": " + ec.message());

  auto bound = broker::reply_router::bind(zmq);
  if (!bound) throw std::runtime_error("cannot bind the reply socket: " + bound.error().message());
  router = std::move(*bound);
  router_fd.assign(::dup(router->fd()));
  reply_endpoint = router->endpoint();
  queries = std::make_unique<activation_queries>(zmq, opts.collector, opts.collector_timeout, ioc);
  publisher = std::make_unique<async_publisher>(invoker, ioc);
}

void detail::server_state::accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || draining) return;
    if (ec) {
      log()->warn("accept failed: {}", ec.message());
    } else {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<session>(std::move(socket), *this)->start();
    }
    accept();
  });
}

void detail::server_state::read_results() {
  // ZMQ_FD is edge-triggered: take every Result waiting, then wait for the fd again.
  while (auto r = router->receive(0ms)) complete(*r);
  router_fd.async_wait(asio::posix::descriptor_base::wait_read, [this](beast::error_code ec) {
    if (!ec) read_results();
  });
}

void detail::server_state::invoke(const std::shared_ptr<session>& s, const route& r,
                                  const std::string& tenant,
                                  bhttp::request<bhttp::string_body>& req) {
  if (draining)
    return s->answer_json(503, error_json("shutting_down", {{"function", r.name}}));
  const bool sync = r.what == endpoint::invoke_sync;
  auto fn = registry.find(tenant, r.name);
  if (!fn) return s->answer_json(404, error_json("no_such_function", {{"function", r.name}}));
  if (!http_enabled(fn->spec()))
    return s->answer_json(403, error_json("http_trigger_disabled", {{"function", r.name}}));

  broker::invocation_request call;
  call.tenant = tenant;
  call.function = r.name;
  if (auto type = req[bhttp::field::content_type]; !type.empty()) call.content_type = std::string(sv(type));
  call.trigger = proto::Trigger::http;
  call.source = std::string(sv(req.target()));

  if (!sync) {
    if (auto url = req["X-Callback-Url"]; !url.empty()) {
      auto callback = parse_callback_url(sv(url));
      if (!callback)
        return s->answer_json(400, error_json("bad_callback_url",
                                              {{"message", "X-Callback-Url must be http://host[:port]/path"},
                                               {"url", sv(url)}}));
      // Expected before it is published: a quick function's result may come before the ack.
      call.invocation_id = new_ulid();
      call.reply_endpoint = reply_endpoint;
      call.correlation = next_correlation++;
      call.callback = true;
      expect_callback(call.correlation, std::move(*callback), call.invocation_id, r.name);
    }
    ++publishing;
    const uint64_t correlation = call.correlation;
    publisher->submit(std::move(call), std::move(req.body()),
                      [this, s, name = r.name, tenant, correlation](result<broker::published> published) {
                        --publishing;
                        if (!published) {
                          awaiting_callback.erase(correlation);  // never runs: no callback
                          answer_refusal(s, name, published.error());
                        } else {
                          const auto& id = published->invocation_id;
                          remember(id, tenant);
                          nlohmann::json j{{"invocation_id", id}, {"function", name}};
                          s->answer_json(202, j.dump() + "\n", id);
                        }
                        finish_if_drained();
                      });
    return;
  }

  // Over the function's concurrency (counted at this adapter), refuse rather than queue.
  const std::string key = broker::function_key(tenant, r.name);
  const uint32_t concurrency = fn->spec().concurrency();
  if (concurrency > 0 && in_flight[key] >= concurrency)
    return s->answer_json(429, error_json("too_many_requests",
                                          {{"function", r.name},
                                           {"message", std::to_string(concurrency) +
                                                           " calls already in flight (the function's concurrency)"}}));

  const auto& body = req.body();
  call.payload = {reinterpret_cast<const uint8_t*>(body.data()), body.size()};
  const uint64_t correlation = next_correlation++;
  call.reply_endpoint = reply_endpoint;
  call.correlation = correlation;
  // Sync calls publish without waiting for the stream's ack, so the I/O thread never
  // blocks on the broker; a publish lost after this point surfaces as the wait running
  // out (504).
  auto published = invoker.invoke(call, /*async_publish=*/true);
  if (!published) return answer_refusal(s, r.name, published.error());
  const auto& id = published->invocation_id;
  remember(id, tenant);
  waiting.emplace(correlation, waiting_call{s, id, key});
  ++in_flight[key];
  s->wait_for_result(correlation, std::chrono::seconds(fn->spec().timeout_s()) + opts.wait_margin);
}

void detail::server_state::answer_refusal(const std::shared_ptr<session>& s,
                                          const std::string& function, std::error_code ec) {
  if (ec == errc::not_found)
    return s->answer_json(404, error_json("no_such_function", {{"function", function}}));
  if (ec == errc::too_large)
    return s->answer_json(413, error_json("payload_too_large", {{"function", function},
                                                                {"message", ec.message()}}));
  if (ec == errc::invalid_argument)
    return s->answer_json(400, error_json("invalid_argument", {{"function", function},
                                                               {"message", ec.message()}}));
  log()->warn("publishing an invocation of {} failed: {}", function, ec.message());
  s->answer_json(503, error_json("unavailable", {{"function", function}, {"message", ec.message()}}));
}

void detail::server_state::expect_callback(uint64_t correlation, callback_target to,
                                           const std::string& id, const std::string& function) {
  auto expiry = std::make_unique<asio::steady_timer>(ioc, opts.callback_wait);
  expiry->async_wait([this, correlation](beast::error_code ec) {
    if (ec || !awaiting_callback.erase(correlation)) return;
    ++callbacks_expired;
    log()->warn("no result came for a callback within {} s", opts.callback_wait.count());
    finish_if_drained();
  });
  awaiting_callback.emplace(correlation, pending_callback{std::move(to), id, function, std::move(expiry)});
}

void detail::server_state::remember(const std::string& id, const std::string& tenant) {
  constexpr size_t kept = 100'000;
  if (published_order.size() == kept) {
    published.erase(published_order.front());
    published_order.pop_front();
  }
  published.emplace(id, tenant);
  published_order.push_back(id);
}

reply detail::server_state::lookup_answer(reply stored, const std::string& id,
                                          const std::string& tenant) const {
  if (stored.status != 404) return stored;
  auto it = published.find(id);
  if (it == published.end() || it->second != tenant) return stored;
  nlohmann::json j{{"id", id}, {"status", "pending"}, {"attempts", 0}};
  return {200, j.dump() + "\n"};
}

void detail::server_state::forget(uint64_t correlation) {
  auto it = waiting.find(correlation);
  if (it == waiting.end()) return;
  if (auto n = in_flight.find(it->second.function_key); n != in_flight.end() && --n->second == 0)
    in_flight.erase(n);
  waiting.erase(it);
}

void detail::server_state::complete(const broker::result_message& m) {
  const auto& r = m.get();
  if (auto cb = awaiting_callback.find(r.correlation());
      cb != awaiting_callback.end() && cb->second.invocation_id == proto::view(r.invocation_id())) {
    auto pending = std::move(cb->second);
    awaiting_callback.erase(cb);
    pending.expiry->cancel();
    callbacks.send(std::move(pending.to), result_message(r, pending.function));
    return;
  }
  auto it = waiting.find(r.correlation());
  if (it == waiting.end() || it->second.invocation_id != proto::view(r.invocation_id())) {
    ++unmatched;
    log()->debug("result for {} matches no waiting request", proto::view(r.invocation_id()));
    return;
  }
  auto s = std::move(it->second.s);
  forget(r.correlation());
  s->on_result(r);
  finish_if_drained();
}

void detail::server_state::give_up(uint64_t correlation) {
  auto it = waiting.find(correlation);
  if (it == waiting.end()) return;
  auto s = std::move(it->second.s);
  auto id = std::move(it->second.invocation_id);
  forget(correlation);
  s->answer_json(504, error_json("timeout", {{"message", "no result within the function's timeout"},
                                             {"invocation_id", id}}),
                 id);
  finish_if_drained();
}

void detail::server_state::begin_drain() {
  if (draining) return;
  draining = true;
  beast::error_code ec;
  acceptor.close(ec);
  log()->info("stopping: {} sync calls still waiting, {} async calls publishing, {} callbacks "
              "sending, {} callbacks waiting for a result (not sent if it comes later)",
              waiting.size(), publishing, callbacks.in_progress(), awaiting_callback.size());
  drain_timer.expires_after(opts.drain);
  drain_timer.async_wait([this](beast::error_code e) {
    if (!e) ioc.stop();
  });
  finish_if_drained();
}

void detail::server_state::finish_if_drained() {
  if (draining && waiting.empty() && publishing == 0 && callbacks.in_progress() == 0) {
    // Let the last answers be written before stopping.
    drain_timer.expires_after(200ms);
    drain_timer.async_wait([this](beast::error_code e) {
      if (!e) ioc.stop();
    });
  }
}

server::server(server_options opts, broker::function_registry& registry, broker::invoker& invoker,
               zmq::context_t& zmq)
    : impl_(std::make_unique<detail::server_state>(std::move(opts), registry, invoker, zmq)) {}

server::~server() = default;

std::string server::listening() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  if (ec) return impl_->opts.listen;
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

const std::string& server::reply_endpoint() const { return impl_->reply_endpoint; }

void server::run() {
  impl_->accept();
  impl_->read_results();
  log()->info("listening on http://{} ({}), results on {}", listening(),
              impl_->opts.keys ? "each caller's tenant from its API key"
                               : "no API keys: every caller is tenant " + impl_->opts.tenant,
              impl_->reply_endpoint);
  impl_->ioc.run();
}

void server::stop() {
  asio::post(impl_->ioc, [this] { impl_->begin_drain(); });
}

}  // namespace fnmesh::http_adapter
