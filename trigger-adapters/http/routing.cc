#include "trigger-adapters/http/routing.h"

#include <nlohmann/json.hpp>

#include "common/metrics_endpoint.h"

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

std::string activation_json(std::string_view id, const proto::ActivationReport& report,
                            std::string_view tenant) {
  const auto* attempts = report.attempts();
  if (!attempts || attempts->size() == 0) return {};
  const proto::Completion* last = nullptr;
  for (const auto* c : *attempts)
    if (c && c->result()) last = c;
  if (!last || !last->usage() || proto::view(last->usage()->tenant()) != tenant) return {};
  const auto& r = *last->result();
  nlohmann::json j;
  j["id"] = id;
  j["status"] = proto::status_name(r.status());
  j["output"] = proto::text(proto::bytes(r.output()));
  j["error"] = proto::view(r.error());
  j["attempts"] = attempts->size();
  j["attempt"] = r.attempt();
  j["node"] = proto::view(r.node_id());
  j["function"] = proto::view(last->usage()->function());
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

std::string request_metrics::render(const adapter_counts& counts) const {
  std::string out;
  append_metric_header(out, "fnmesh_http_requests_total", "counter",
                       "HTTP requests answered, by status code.");
  for (const auto& [code, n] : by_status_)
    out += "fnmesh_http_requests_total{code=\"" + std::to_string(code) + "\"} " +
           std::to_string(n) + "\n";
  append_metric(out, "fnmesh_http_results_malformed_total", "counter",
                "Frames on the reply socket that failed verification (dropped).", counts.malformed_results);
  append_metric(out, "fnmesh_http_results_unmatched_total", "counter",
                "Results for no waiting request (late or unknown).", counts.unmatched_results);
  append_metric(out, "fnmesh_http_waiting_requests", "gauge",
                "Synchronous requests waiting for their result.", counts.waiting);
  append_metric(out, "fnmesh_http_callbacks_pending", "gauge",
                "Async calls whose callback waits for the result.", counts.callbacks_pending);
  append_metric(out, "fnmesh_http_callbacks_delivered_total", "counter",
                "Results POSTed to their X-Callback-Url and answered 2xx.", counts.callbacks_delivered);
  append_metric(out, "fnmesh_http_callbacks_failed_total", "counter",
                "Callbacks given up after every retry.", counts.callbacks_failed);
  append_metric(out, "fnmesh_http_callbacks_expired_total", "counter",
                "Callbacks whose result did not come within the callback wait.", counts.callbacks_expired);
  return out;
}

std::optional<callback_target> parse_callback_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (!url.starts_with(scheme)) return std::nullopt;
  url.remove_prefix(scheme.size());
  const auto slash = url.find('/');
  const std::string_view authority = url.substr(0, slash);
  callback_target t;
  if (slash != std::string_view::npos) t.path = std::string(url.substr(slash));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  std::string_view host = authority;
  if (host.front() == '[') {  // [v6]:port
    const auto close = host.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    t.host = std::string(host.substr(1, close - 1));
    host.remove_prefix(close + 1);
    if (!host.empty() && host.front() != ':') return std::nullopt;
  } else {
    t.host = std::string(host.substr(0, host.find(':')));
    host.remove_prefix(t.host.size());
  }
  if (!host.empty()) {
    const auto port = host.substr(1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoi(std::string(port)) > 65535 || std::stoi(std::string(port)) == 0)
      return std::nullopt;
    t.port = std::string(port);
  }
  if (t.host.empty() || t.path.find_first_of(" \r\n") != std::string::npos) return std::nullopt;
  return t;
}

}  // namespace fnmesh::http_adapter
