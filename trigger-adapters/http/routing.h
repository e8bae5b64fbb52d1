#pragma once
// The http adapter's decisions that need no socket: which endpoint a request names, which
// HTTP status a Result's status becomes, the JSON bodies it answers with, and the
// request counters behind /metrics. Kept apart from Beast so they test in milliseconds.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "flatbuffers/proto.h"

namespace fnmesh::http_adapter {

enum class endpoint {
  invoke_sync,         // POST /function/<name>
  invoke_async,        // POST /async-function/<name>
  invocation,          // GET /invocations/<id>
  healthz,             // GET /healthz
  metrics,             // GET /metrics
  not_found,           // no such path
  method_not_allowed,  // a known path with the wrong method
};

struct route {
  endpoint what = endpoint::not_found;
  std::string name;  // the function name or invocation id
};

// `target` may carry a query string; it is ignored.
route parse_route(std::string_view method, std::string_view target);

// Whether the function's manifest lets HTTP invoke it (triggers.http, true by default).
bool http_enabled(const proto::FunctionSpec& spec) noexcept;

// ok 200; error, crashed, out_of_memory, cpu_limit 502; timeout 504; rejected 429;
// no_such_function 404.
int http_status(proto::Status status) noexcept;

// {"error":<code>, <key>:<value>, ...} with values JSON-escaped.
std::string error_json(std::string_view code,
                       std::initializer_list<std::pair<std::string_view, std::string_view>> fields);

// GET /invocations/<id>: {id, status, output, error, attempts, ...} from the last stored
// attempt; an empty string when the report has no attempts (unknown id) or the invocation
// is another tenant's.
std::string activation_json(std::string_view id, const proto::ActivationReport& report,
                            std::string_view tenant);

// Where an X-Callback-Url points: only http://host[:port][/path] (no TLS, no user info).
struct callback_target {
  std::string host;
  std::string port = "80";
  std::string path = "/";
};
std::optional<callback_target> parse_callback_url(std::string_view url);

// What the adapter did besides answering requests, for /metrics.
struct adapter_counts {
  uint64_t malformed_results = 0;  // frames on the reply socket that failed verification
  uint64_t unmatched_results = 0;  // results for no waiting request (late, or after a 504)
  size_t waiting = 0;              // sync calls waiting for their result
  size_t callbacks_pending = 0;    // async calls whose callback waits for the result
  uint64_t callbacks_delivered = 0;
  uint64_t callbacks_failed = 0;   // every retry refused or unreachable
  uint64_t callbacks_expired = 0;  // no result came within the callback wait
};

// Requests answered, by HTTP status, and what came back malformed or late. Owned by the
// I/O thread; the `*_total` atomics it renders are read from wherever they are counted.
class request_metrics {
 public:
  void answered(int status) { ++by_status_[status]; }
  uint64_t answered_with(int status) const;

  // Prometheus text exposition.
  std::string render(const adapter_counts& counts) const;

 private:
  std::map<int, uint64_t> by_status_;
};

}  // namespace fnmesh::http_adapter
