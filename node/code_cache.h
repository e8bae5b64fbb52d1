#pragma once
// code_cache: function code bundles unpacked under <node dir>/code/<digest>/, fetched
// from KV FNMESH_CODE the first time a digest is needed. Thread-safe.
#include <filesystem>
#include <mutex>
#include <string>
#include <unordered_set>

#include "broker/client/kv.h"
#include "common/result.h"

namespace fnmesh::node {

class code_cache {
 public:
  code_cache(broker::kv_bucket& code, std::filesystem::path dir);

  // The folder holding the bundle's files, fetching and unpacking it if needed.
  result<std::filesystem::path> ensure(const std::string& digest);

 private:
  broker::kv_bucket& code_;
  std::filesystem::path dir_;
  std::mutex mutex_;
  std::unordered_set<std::string> ready_;  // digests known unpacked: no file system check
};

}  // namespace fnmesh::node
