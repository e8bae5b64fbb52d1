#pragma once
// kv_bucket: one JetStream key-value bucket (owned kvStore handle). Thread-safe.
#include <nats/nats.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "broker/client/connection.h"

namespace fnmesh::broker {

class kv_bucket {
 public:
  // Binds to an existing bucket (bootstrap creates them).
  static result<std::unique_ptr<kv_bucket>> open(connection& conn, std::string_view bucket);
  ~kv_bucket();

  result<std::optional<std::vector<uint8_t>>> get(std::string_view key);
  result<void> put(std::string_view key, std::span<const uint8_t> value);
  result<void> erase(std::string_view key);  // no error when absent
  result<std::vector<std::string>> keys();  // those with a value

  // Calls on_change(key, value) for every current entry and every later put, and
  // on_change(key, nullopt) for a delete, from one background thread, until destroyed.
  // on_initial_done (optional) runs once, on that thread, after the entries that existed
  // when the watch started have been delivered. One watch per bucket object.
  using change_handler =
      std::function<void(const std::string& key, std::optional<std::span<const uint8_t>> value)>;
  result<void> watch_all(change_handler on_change, std::function<void()> on_initial_done = {});

 private:
  kv_bucket(kvStore* kv, jsCtx* js, std::string bucket) noexcept
      : kv_(kv), js_(js), bucket_(std::move(bucket)) {}
  kvStore* kv_;
  jsCtx* js_;  // the connection's, which outlives this
  std::string bucket_;
  kvWatcher* watcher_ = nullptr;
  std::atomic<bool> stopping_{false};
  std::thread watch_thread_;
};

}  // namespace fnmesh::broker
