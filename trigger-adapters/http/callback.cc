#include "trigger-adapters/http/callback.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <memory>

#include "common/log.h"

namespace fnmesh::http_adapter {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

// One callback until it is delivered or out of retries; keeps itself alive through its
// handlers.
class callback_delivery : public std::enable_shared_from_this<callback_delivery> {
 public:
  callback_delivery(callback_sender& sender, callback_target to, callback_message m)
      : sender_(sender), to_(std::move(to)), message_(std::move(m)), resolver_(sender.ioc_),
        stream_(sender.ioc_), timer_(sender.ioc_) {
    request_.method(bhttp::verb::post);
    request_.target(to_.path);
    request_.version(11);
    request_.set(bhttp::field::host, to_.port == "80" ? to_.host : to_.host + ":" + to_.port);
    request_.set(bhttp::field::user_agent, "fnmesh-http");
    request_.set(bhttp::field::content_type, message_.content_type);
    request_.set("X-Call-Id", message_.invocation_id);
    request_.set("X-Function-Name", message_.function);
    request_.set("X-Function-Status", std::to_string(message_.function_status));
    request_.set("X-Fnmesh-Status", message_.fnmesh_status);
    request_.keep_alive(false);
    request_.body() = std::move(message_.body);
    request_.prepare_payload();
  }

  void attempt() {
    stream_.expires_after(sender_.attempt_timeout_);
    resolver_.async_resolve(to_.host, to_.port, [self = shared_from_this()](
                                                    beast::error_code ec, tcp::resolver::results_type r) {
      if (ec) return self->retry("cannot resolve " + self->to_.host + ": " + ec.message());
      self->stream_.async_connect(r, [self](beast::error_code ec, const tcp::endpoint&) {
        if (ec) return self->retry("cannot connect: " + ec.message());
        bhttp::async_write(self->stream_, self->request_, [self](beast::error_code ec, size_t) {
          if (ec) return self->retry("cannot send: " + ec.message());
          bhttp::async_read(self->stream_, self->buffer_, self->response_,
                            [self](beast::error_code ec, size_t) {
                              if (ec) return self->retry("no answer: " + ec.message());
                              const unsigned code = self->response_.result_int();
                              if (code / 100 != 2)
                                return self->retry("answered " + std::to_string(code));
                              self->done(true);
                            });
        });
      });
    });
  }

 private:
  void retry(const std::string& why) {
    beast::error_code ignored;
    stream_.socket().close(ignored);
    if (tries_ >= sender_.retries_) {
      logger("http")->warn("callback of {} to http://{}:{}{} failed {} times, last: {}",
                           message_.invocation_id, to_.host, to_.port, to_.path, tries_ + 1, why);
      return done(false);
    }
    logger("http")->info("callback of {}: {}; retrying", message_.invocation_id, why);
    timer_.expires_after(sender_.first_backoff_ * (int64_t(1) << std::min(tries_, 20)));
    ++tries_;
    buffer_.clear();
    response_ = {};
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->attempt();
    });
  }

  void done(bool delivered) {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    sender_.finished(delivered);
  }

  callback_sender& sender_;
  callback_target to_;
  callback_message message_;
  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  asio::steady_timer timer_;
  bhttp::request<bhttp::string_body> request_;
  bhttp::response<bhttp::string_body> response_;
  beast::flat_buffer buffer_;
  int tries_ = 0;
};

callback_sender::callback_sender(asio::io_context& ioc, int retries,
                                 std::chrono::milliseconds first_backoff,
                                 std::function<void()> on_finished,
                                 std::chrono::milliseconds attempt_timeout)
    : ioc_(ioc), retries_(retries), first_backoff_(first_backoff), attempt_timeout_(attempt_timeout),
      on_finished_(std::move(on_finished)) {}

void callback_sender::send(callback_target to, callback_message message) {
  ++in_progress_;
  std::make_shared<callback_delivery>(*this, std::move(to), std::move(message))->attempt();
}

void callback_sender::finished(bool delivered) {
  --in_progress_;
  ++(delivered ? delivered_ : failed_);
  if (on_finished_) on_finished_();
}

}  // namespace fnmesh::http_adapter
