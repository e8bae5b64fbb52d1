#pragma once
// node_metrics: what the node's /metrics shows (DESIGN §10, issue 4 "Visible"): completed
// invocations by tenant, function and status, their CPU seconds, kills by reason and the
// accounting source of the latest Usage. count() runs on the executor's loop thread for
// every completion, render() on the metrics endpoint's thread; one mutex between them, and
// count() allocates only the first time it sees a function.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "flatbuffers/proto.h"

namespace fnmesh::node {

class node_metrics {
 public:
  // One completion: its status and the CPU time of its Usage (user + system).
  void count(std::string_view tenant, std::string_view function, proto::Status status,
             int64_t cpu_ns, proto::AccountingSource source);

  // Prometheus text exposition; `running` is the invocations in flight now.
  std::string render(uint32_t running) const;

 private:
  struct function_counts {
    std::array<uint64_t, size_t(proto::Status::MAX) + 1> by_status{};
    uint64_t cpu_ns = 0;
  };
  mutable std::mutex mutex_;
  // tenant -> function -> counts; std::less<> finds by string_view without a copy.
  std::map<std::string, std::map<std::string, function_counts, std::less<>>, std::less<>> functions_;
  std::optional<proto::AccountingSource> source_;  // none until the first completion
};

}  // namespace fnmesh::node
