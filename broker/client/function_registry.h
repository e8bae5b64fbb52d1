#pragma once
// function_registry: the deployed functions, read from KV FNMESH_FUNCTIONS and kept
// current by a watch. Owns verified FunctionSpec buffers; find()/all() are thread-safe.
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/client/kv.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {

// One deployed function: its verified FunctionSpec buffer.
class function_record {
 public:
  explicit function_record(std::vector<uint8_t> buffer) : buffer_(std::move(buffer)) {}
  const proto::FunctionSpec& spec() const noexcept {
    return *flatbuffers::GetRoot<proto::FunctionSpec>(buffer_.data());
  }
  std::span<const uint8_t> buffer() const noexcept { return buffer_; }

 private:
  std::vector<uint8_t> buffer_;
};
using function_ptr = std::shared_ptr<const function_record>;

class function_registry {
 public:
  // Called after a function is added/changed (record) or removed (nullptr, with its key).
  using change_handler = std::function<void(const std::string& key, function_ptr record)>;

  // Loads every spec, then follows changes. A value that fails verification is logged
  // and ignored.
  static result<std::unique_ptr<function_registry>> open(connection& conn,
                                                         change_handler on_change = {});
  function_ptr find(std::string_view tenant, std::string_view function) const;
  std::vector<function_ptr> all() const;
  // Replaces the change handler: it runs at once for every function loaded, then after
  // each change (a change racing with this call may be reported twice).
  void subscribe(change_handler on_change);

 private:
  function_registry() = default;
  void apply(const std::string& key, std::optional<std::span<const uint8_t>> value);

  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, function_ptr> by_key_;
  std::mutex handler_mutex_;  // held while on_change_ runs: one report at a time
  change_handler on_change_;
  std::unique_ptr<kv_bucket> bucket_;
};

}  // namespace fnmesh::broker
