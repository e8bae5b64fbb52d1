#pragma once
// The deploy manifest, fnmesh.yml (DESIGN §2): parsed and checked field by field, every
// error naming the file, line and field, then encoded as FunctionSpec buffers.
#include <cstdint>
#include <expected>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "flatbuffers/proto.h"

namespace fnmesh::manifest {

// What is wrong with a manifest: `<file>:<line>: <field>: <message>`.
struct manifest_error {
  std::string file;
  int line = 0;         // 1-based; 0 when the whole file is at fault
  std::string field;    // dotted path, e.g. functions.hello.memory
  std::string message;

  std::string what() const;
};

// One function as the manifest declares it (defaults as in FunctionSpec).
struct function_def {
  std::string name;
  std::string tenant = "default";
  proto::Runtime runtime = proto::Runtime::python3;
  std::string handler;
  uint32_t memory_mb = 128;
  uint32_t timeout_s = 3;
  uint32_t concurrency = 0;  // 0 = unlimited
  uint32_t tmp_mb = 512;     // the sandbox's /tmp
  uint32_t pids = 256;       // processes and threads in the sandbox
  uint32_t cpu_budget_ms = 0;  // CPU an invocation may use; 0 = timeout x its CPU share
  std::map<std::string, std::string> env;
  proto::NetworkPolicy network = proto::NetworkPolicy::none;
  std::vector<std::string> allow;  // when network is an allow-list: numeric, host names resolved
  uint32_t retries = 2;            // async only, as Lambda
  uint32_t retry_delay_s = 60;     // before the first retry, doubled for each next (Lambda: 1 min, 2 min)
  uint32_t max_event_age_s = 21600;  // async invocations older than this go to the DLQ unrun
  std::map<std::string, std::string> labels;
  bool http = true;
  std::vector<std::string> cron;
  std::vector<std::string> events;
  std::vector<std::string> files;
  int line = 0;          // where the function's name stands
  int handler_line = 0;  // where its handler stands
};

template <class T>
using parsed = std::expected<T, manifest_error>;

inline constexpr std::string_view file_name = "fnmesh.yml";

// Parses manifest text; `file` only labels errors.
parsed<std::vector<function_def>> parse_text(std::string_view yaml, const std::string& file);
// Reads and parses a manifest file; relative `files` folders become absolute paths
// against the manifest's folder.
parsed<std::vector<function_def>> parse_file(const std::filesystem::path& path);
// The manifest of a function folder: <folder>/fnmesh.yml (or fnmesh.yaml).
std::filesystem::path find_in_folder(const std::filesystem::path& folder);

// Checks what the folder must hold for each function (the python module the handler
// names). `file` labels errors.
parsed<void> check_folder(const std::vector<function_def>& defs,
                          const std::filesystem::path& folder, const std::string& file);

// The FunctionSpec buffer of one function, with its code digest and version.
std::vector<uint8_t> encode_spec(const function_def& def, std::string_view code_digest,
                                 std::string_view version);

}  // namespace fnmesh::manifest
