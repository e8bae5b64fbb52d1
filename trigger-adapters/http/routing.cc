#include "trigger-adapters/http/routing.h"

#include <nlohmann/json.hpp>

namespace fnmesh::http_adapter {
namespace {

// One path segment after `prefix`, or nullopt when the path is something else.
std::optional<std::string_view> segment_after(std::string_view path, std::string_view prefix) {
  if (!path.starts_with(prefix)) return std::nullopt;
  auto rest = path.substr(prefix.size());
  if (rest.empty() || rest.find('/') != std::string_view::npos) return std::nullopt;
  return rest;
}

}  // namespace

route parse_route(std::string_view method, std::string_view target) {
  const auto path = target.substr(0, target.find('?'));
  const bool get = method == "GET";
  const bool post = method == "POST";
  auto with = [](endpoint e, bool method_ok, std::string_view name = {}) {
    return method_ok ? route{e, std::string(name)} : route{endpoint::method_not_allowed, {}};
  };
  if (auto name = segment_after(path, "/function/")) return with(endpoint::invoke_sync, post, *name);
  if (auto name = segment_after(path, "/async-function/"))
    return with(endpoint::invoke_async, post, *name);
  if (auto id = segment_after(path, "/invocations/")) return with(endpoint::invocation, get, *id);
  if (path == "/healthz") return with(endpoint::healthz, get);
  if (path == "/metrics") return with(endpoint::metrics, get);
  return {};
}

bool http_enabled(const proto::FunctionSpec& spec) noexcept {
  return !spec.triggers() || spec.triggers()->http();
}

int http_status(proto::Status status) noexcept {
  switch (status) {
    case proto::Status::ok: return 200;
    case proto::Status::timeout: return 504;
    case proto::Status::rejected: return 429;
    case proto::Status::no_such_function: return 404;
    case proto::Status::error:
    case proto::Status::crashed:
    case proto::Status::out_of_memory:
    case proto::Status::cpu_limit: return 502;
  }
  return 502;
}

std::string error_json(std::string_view code,
                       std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
  nlohmann::json j;
  j["error"] = code;
  for (const auto& [k, v] : fields) j[std::string(k)] = v;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string activation_json(std::string_view id, const proto::ActivationReport& report) {
  const auto* attempts = report.attempts();
  if (!attempts || attempts->size() == 0) return {};
  const proto::Completion* last = nullptr;
  for (const auto* c : *attempts)
    if (c && c->result()) last = c;
  if (!last) return {};
  const auto& r = *last->result();
  nlohmann::json j;
  j["id"] = id;
  j["status"] = proto::status_name(r.status());
  j["output"] = proto::text(proto::bytes(r.output()));
  j["error"] = proto::view(r.error());
  j["attempts"] = attempts->size();
  j["attempt"] = r.attempt();
  j["node"] = proto::view(r.node_id());
  if (last->usage()) j["function"] = proto::view(last->usage()->function());
  if (const auto* t = r.timings()) {
    j["started_ns"] = t->started_ns();
    j["finished_ns"] = t->finished_ns();
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

uint64_t request_metrics::answered_with(int status) const {
  auto it = by_status_.find(status);
  return it == by_status_.end() ? 0 : it->second;
}

std::string request_metrics::render(uint64_t malformed_results, uint64_t unmatched_results,
                                    size_t waiting) const {
  std::string out;
  out += "# HELP fnmesh_http_requests_total HTTP requests answered, by status code.\n";
  out += "# TYPE fnmesh_http_requests_total counter\n";
  for (const auto& [code, n] : by_status_)
    out += "fnmesh_http_requests_total{code=\"" + std::to_string(code) + "\"} " +
           std::to_string(n) + "\n";
  out += "# HELP fnmesh_http_results_malformed_total Frames on the reply socket that failed "
         "verification (dropped).\n";
  out += "# TYPE fnmesh_http_results_malformed_total counter\n";
  out += "fnmesh_http_results_malformed_total " + std::to_string(malformed_results) + "\n";
  out += "# HELP fnmesh_http_results_unmatched_total Results for no waiting request (late or "
         "unknown).\n";
  out += "# TYPE fnmesh_http_results_unmatched_total counter\n";
  out += "fnmesh_http_results_unmatched_total " + std::to_string(unmatched_results) + "\n";
  out += "# HELP fnmesh_http_waiting_requests Synchronous requests waiting for their result.\n";
  out += "# TYPE fnmesh_http_waiting_requests gauge\n";
  out += "fnmesh_http_waiting_requests " + std::to_string(waiting) + "\n";
  return out;
}

}  // namespace fnmesh::http_adapter
