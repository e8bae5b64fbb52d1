#include "node/node_metrics.h"

#include <algorithm>
#include <cstdio>

#include "common/metrics_endpoint.h"

namespace fnmesh::node {

namespace p = fnmesh::proto;

namespace {

constexpr p::Status kill_reasons[] = {p::Status::cpu_limit, p::Status::out_of_memory, p::Status::timeout};

std::string function_labels(const std::string& tenant, const std::string& function) {
  return "tenant=\"" + prometheus_escape(tenant) + "\",function=\"" + prometheus_escape(function) + "\"";
}

}  // namespace

void node_metrics::count(std::string_view tenant, std::string_view function, p::Status status,
                         int64_t cpu_ns, p::AccountingSource source) {
  std::lock_guard lock(mutex_);
  auto t = functions_.find(tenant);
  if (t == functions_.end()) t = functions_.emplace(std::string(tenant), decltype(t->second){}).first;
  auto f = t->second.find(function);
  if (f == t->second.end()) f = t->second.emplace(std::string(function), function_counts{}).first;
  if (size_t(status) < f->second.by_status.size()) ++f->second.by_status[size_t(status)];
  f->second.cpu_ns += uint64_t(std::max<int64_t>(0, cpu_ns));
  source_ = source;
}

std::string node_metrics::render(uint32_t running) const {
  std::lock_guard lock(mutex_);
  std::string out;
  append_metric_header(out, "fnmesh_node_invocations_total", "counter",
         "Invocations this node completed, by tenant, function and status.");
  for (const auto& [tenant, functions] : functions_)
    for (const auto& [function, c] : functions)
      for (size_t s = 0; s < c.by_status.size(); ++s)
        if (c.by_status[s])
          out += "fnmesh_node_invocations_total{" + function_labels(tenant, function) + ",status=\"" +
                 p::status_name(p::Status(s)) + "\"} " + std::to_string(c.by_status[s]) + "\n";

  append_metric_header(out, "fnmesh_node_cpu_seconds_total", "counter",
         "CPU time (user + system) of the invocations this node completed, as their Usage bills it.");
  for (const auto& [tenant, functions] : functions_)
    for (const auto& [function, c] : functions) {
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%.9f", double(c.cpu_ns) / 1e9);
      out += "fnmesh_node_cpu_seconds_total{" + function_labels(tenant, function) + "} " + seconds + "\n";
    }

  append_metric_header(out, "fnmesh_node_kills_total", "counter",
         "Invocations killed, by reason: over their CPU budget, out of memory, past their timeout.");
  for (const auto reason : kill_reasons) {
    uint64_t n = 0;
    for (const auto& [tenant, functions] : functions_)
      for (const auto& [function, c] : functions) n += c.by_status[size_t(reason)];
    out += std::string("fnmesh_node_kills_total{reason=\"") + p::status_name(reason) + "\"} " +
           std::to_string(n) + "\n";
  }

  append_metric_header(out, "fnmesh_node_running", "gauge", "Invocations running on this node now.");
  out += "fnmesh_node_running " + std::to_string(running) + "\n";

  if (source_) {
    append_metric_header(out, "fnmesh_node_accounting_info", "gauge",
           "Where the latest Usage's CPU figures came from: bpf (the kernel meter), cgroup or rusage.");
    out += std::string("fnmesh_node_accounting_info{source=\"") + p::EnumNameAccountingSource(*source_) +
           "\"} 1\n";
  }
  return out;
}

}  // namespace fnmesh::node
