#pragma once
// server: the http adapter. An asynchronous HTTP/1.1 server (one I/O thread, no thread
// per waiting request) that publishes invocations and answers sync calls when their
// Result reaches its reply ROUTER. Beast lives only in server.cc.
#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "broker/client/subjects.h"
#include "common/api_keys.h"

namespace fnmesh::http_adapter {
namespace detail {
struct server_state;
}

struct server_options {
  std::string listen = "127.0.0.1:8080";             // host:port; port 0 picks a free one
  // Each caller's tenant comes from its API key; without keys every caller is `tenant`.
  std::shared_ptr<const api_keys> keys;
  std::string tenant = std::string(broker::default_tenant);
  std::string collector = "tcp://127.0.0.1:7700";    // for GET /invocations/<id>
  std::chrono::milliseconds wait_margin{2000};       // sync wait = function timeout + this
  std::chrono::milliseconds collector_timeout{2000};
  std::chrono::milliseconds drain{10000};            // SIGTERM: how long waiting calls may finish
  std::chrono::seconds idle{60};                     // idle keep-alive connections are closed
  int callback_retries = 5;                          // after the first POST to X-Callback-Url
  std::chrono::milliseconds callback_backoff{1000};  // doubles on each retry
  std::chrono::seconds callback_wait{3600};          // how long a callback waits for its result
};

// Owns the listener, the reply ROUTER (read on the I/O thread when its fd wakes it), the
// collector queries and the async publishes (each on a thread of its own). run() on one
// thread.
class server {
 public:
  // Binds the listener and the reply ROUTER. Throws std::runtime_error with one clear
  // line (e.g. the port is taken): start-up only.
  server(server_options opts, broker::function_registry& registry, broker::invoker& invoker,
         zmq::context_t& zmq);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  std::string listening() const;           // host:port actually bound
  const std::string& reply_endpoint() const;

  // Serves until stop(): then stops accepting, lets waiting sync calls finish (up to
  // opts.drain), then returns.
  void run();
  void stop();  // thread-safe

 private:
  std::unique_ptr<detail::server_state> impl_;
};

}  // namespace fnmesh::http_adapter
