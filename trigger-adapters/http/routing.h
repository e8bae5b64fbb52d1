#pragma once
// The http adapter's decisions that need no socket: which endpoint a request names, which
// HTTP status a Result's status becomes, the JSON bodies it answers with, and the
// request counters behind /metrics. Kept apart from Beast so they test in milliseconds.
#include <cstdint>
#include <map>
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
// attempt; an empty string when the report has no attempts (unknown id).
std::string activation_json(std::string_view id, const proto::ActivationReport& report);

// Requests answered, by HTTP status, and what came back malformed or late. Owned by the
// I/O thread; the `*_total` atomics it renders are read from wherever they are counted.
class request_metrics {
 public:
  void answered(int status) { ++by_status_[status]; }
  uint64_t answered_with(int status) const;

  // Prometheus text exposition.
  std::string render(uint64_t malformed_results, uint64_t unmatched_results,
                     size_t waiting) const;

 private:
  std::map<int, uint64_t> by_status_;
};

}  // namespace fnmesh::http_adapter
