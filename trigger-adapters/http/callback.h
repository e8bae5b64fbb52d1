#pragma once
// callback_sender: POSTs an async invocation's result to its X-Callback-Url, retrying
// with doubling back-off when the receiver is unreachable or answers other than 2xx.
// Runs on the server's asio I/O context (no thread of its own): I/O thread only.
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "trigger-adapters/http/routing.h"

namespace fnmesh::http_adapter {

// What the receiver gets: the output (or the error JSON) as the body, and headers that
// say which invocation it was and how it ended.
struct callback_message {
  std::string invocation_id;
  std::string function;
  int function_status = 200;      // the HTTP status a sync call would have had
  std::string fnmesh_status;      // ok, error, timeout, ...
  std::string content_type;
  std::string body;
};

class callback_sender {
 public:
  // retries: further attempts after the first; the n-th waits first_backoff * 2^(n-1).
  // on_finished runs after each callback is delivered or given up.
  callback_sender(boost::asio::io_context& ioc, int retries, std::chrono::milliseconds first_backoff,
                  std::function<void()> on_finished,
                  std::chrono::milliseconds attempt_timeout = std::chrono::seconds(10));

  void send(callback_target to, callback_message message);

  size_t in_progress() const noexcept { return in_progress_; }
  uint64_t delivered() const noexcept { return delivered_; }
  uint64_t failed() const noexcept { return failed_; }

 private:
  friend class callback_delivery;
  void finished(bool delivered);

  boost::asio::io_context& ioc_;
  int retries_;
  std::chrono::milliseconds first_backoff_;
  std::chrono::milliseconds attempt_timeout_;
  std::function<void()> on_finished_;
  size_t in_progress_ = 0;
  uint64_t delivered_ = 0;
  uint64_t failed_ = 0;
};

}  // namespace fnmesh::http_adapter
