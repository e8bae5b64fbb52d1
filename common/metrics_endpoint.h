#pragma once
// metrics_endpoint: a daemon's Prometheus `/metrics` over HTTP/1.1 (DESIGN §10). Owns a
// listening TCP socket and one thread that answers one connection at a time: `GET /metrics`
// with what the render callback returns, 404 for another path, 405 for another method,
// then closes the connection. render runs on that thread only; what it reads of the
// daemon must be safe to read from there.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "common/unique_fd.h"

namespace fnmesh {

class metrics_endpoint {
 public:
  // listen: "HOST:PORT" ("127.0.0.1:0": a free port; "[::1]:9100" for IPv6). Throws with
  // one clear line when the address is bad or cannot be bound (a taken port).
  metrics_endpoint(const std::string& listen, std::function<std::string()> render);
  ~metrics_endpoint();  // stops answering and joins the thread

  uint16_t port() const noexcept { return port_; }
  const std::string& url() const noexcept { return url_; }  // http://HOST:PORT/metrics

 private:
  void serve();
  void answer(int fd);

  std::function<std::string()> render_;
  unique_fd listener_;
  unique_fd stop_;  // eventfd: written once by the destructor
  uint16_t port_ = 0;
  std::string url_;
  std::thread thread_;
};

// A label value as it goes between the quotes of the Prometheus text format: backslash,
// double quote and line feed escaped.
std::string prometheus_escape(std::string_view value);

// Prometheus text: a metric's `# HELP` and `# TYPE` lines (its samples follow).
void append_metric_header(std::string& out, std::string_view name, std::string_view type,
                          std::string_view help);
// A metric with one sample and no labels: its header and its value.
void append_metric(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help, uint64_t value);

}  // namespace fnmesh
