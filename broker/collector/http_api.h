#pragma once
// http_api: the collector's HTTP listener (README "HTTP API"). `GET /metrics` answers what
// render_metrics returns, with no token; every `/v1/...` request must be a GET with
// `Authorization: Bearer <token>` known to `tokens` (the entry `admin` is the admin), and
// is then answered by `handle` with the path and the percent-decoded query parameters.
// Owns the listening socket, its connections (HTTP/1.1 keep-alive) and the one I/O thread
// that serves them: handle and render_metrics run on that thread only. The counters may
// be read from any thread. Beast lives only in http_api.cc.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "broker/collector/api.h"
#include "common/api_keys.h"

namespace fnmesh::collector {
namespace detail {
struct http_api_state;
}

class http_api {
 public:
  using handler = std::function<api_response(const caller&, std::string_view path, const query_params&)>;

  // listen: "HOST:PORT" (port 0: a free one; "[::1]:7701" for IPv6). tokens: nullptr when
  // none are configured, and then every /v1 request is 401; it must outlive this object.
  // Throws std::runtime_error with one clear line when the address is bad or taken.
  http_api(const std::string& listen, handler handle, const api_keys* tokens,
           std::function<std::string()> render_metrics);
  ~http_api();  // closes every connection and joins the thread
  http_api(const http_api&) = delete;
  http_api& operator=(const http_api&) = delete;

  uint16_t port() const noexcept;
  const std::string& endpoint() const noexcept;  // http://HOST:PORT as bound

  uint64_t requests() const noexcept;      // every request answered, whatever the status
  uint64_t unauthorized() const noexcept;  // the 401s among them

 private:
  std::unique_ptr<detail::http_api_state> impl_;
};

}  // namespace fnmesh::collector
