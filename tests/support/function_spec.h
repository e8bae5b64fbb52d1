#pragma once
// FunctionSpecs for tests: the fields a test cares about, sensible defaults for the rest,
// and deploying one the way `fnmesh deploy` does (KV FNMESH_FUNCTIONS + its consumer).
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "flatbuffers/proto.h"

namespace fnmesh::test {

struct function_fields {
  std::string name = "fn";
  std::string tenant = "default";
  std::string version = "v1";
  proto::Runtime runtime = proto::Runtime::python3;
  std::string handler = "handler.handle";
  uint32_t memory_mb = 128;
  uint32_t timeout_s = 3;
  uint32_t retries = 2;
  uint32_t concurrency = 0;
  std::vector<std::pair<std::string, std::string>> env;
  proto::NetworkPolicy network = proto::NetworkPolicy::none;
  uint32_t tmp_mb = 512;
  uint32_t pids_max = 256;
  uint32_t cpu_budget_ms = 0;
  bool http = true;
  std::vector<std::string> cron;    // 5-field expressions or @every <duration>
  std::vector<std::string> events;  // subjects under fnmesh.events.
  std::vector<std::string> files;   // watched folders (absolute)
};

std::vector<uint8_t> encode_spec(const function_fields& f);
broker::function_ptr function_record_of(const function_fields& f);

// Puts the spec in KV FNMESH_FUNCTIONS and creates its durable consumer.
result<void> deploy_spec(broker::connection& conn, std::span<const uint8_t> spec);

}  // namespace fnmesh::test
