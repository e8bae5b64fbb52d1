#include "broker/client/function_registry.h"

#include <future>

#include "broker/client/subjects.h"
#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::broker {
namespace {
auto log() { return fnmesh::logger("registry"); }
}  // namespace

result<std::unique_ptr<function_registry>> function_registry::open(connection& conn,
                                                                   change_handler on_change) {
  auto bucket = kv_bucket::open(conn, functions_bucket);
  if (!bucket) return fail(bucket.error());
  std::unique_ptr<function_registry> reg(new function_registry());
  reg->on_change_ = std::move(on_change);
  reg->bucket_ = std::move(*bucket);

  auto loaded = std::make_shared<std::promise<void>>();
  auto done = loaded->get_future();
  auto* self = reg.get();
  auto w = reg->bucket_->watch_all(
      [self](const std::string& key, std::optional<std::span<const uint8_t>> value) {
        self->apply(key, value);
      },
      [loaded] { loaded->set_value(); });
  if (!w) return fail(w.error());
  if (done.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    log()->error("timed out loading {}", functions_bucket);
    return fail(errc::timeout);
  }
  return reg;
}

void function_registry::apply(const std::string& key,
                              std::optional<std::span<const uint8_t>> value) {
  function_ptr record;
  if (value) {
    if (!proto::verified<proto::FunctionSpec>(*value)) {
      log()->warn("ignoring {}: not a valid FunctionSpec ({} bytes)", key, value->size());
      return;
    }
    record = std::make_shared<const function_record>(
        std::vector<uint8_t>(value->begin(), value->end()));
  }
  {
    std::unique_lock lock(mutex_);
    if (record) {
      by_key_[key] = record;
    } else if (by_key_.erase(key) == 0) {
      return;  // deleting something we never had
    }
  }
  log()->debug("{} {}", record ? "deployed" : "removed", key);
  std::lock_guard hold(handler_mutex_);
  if (on_change_) on_change_(key, std::move(record));
}

void function_registry::subscribe(change_handler on_change) {
  std::lock_guard hold(handler_mutex_);
  on_change_ = std::move(on_change);
  std::vector<std::pair<std::string, function_ptr>> loaded;
  {
    std::shared_lock lock(mutex_);
    loaded.assign(by_key_.begin(), by_key_.end());
  }
  if (on_change_)
    for (const auto& [key, record] : loaded) on_change_(key, record);
}

function_ptr function_registry::find(std::string_view tenant, std::string_view function) const {
  std::string key = function_key(tenant, function);
  std::shared_lock lock(mutex_);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

std::vector<function_ptr> function_registry::all() const {
  std::shared_lock lock(mutex_);
  std::vector<function_ptr> out;
  out.reserve(by_key_.size());
  for (const auto& [key, rec] : by_key_) out.push_back(rec);
  return out;
}

}  // namespace fnmesh::broker
