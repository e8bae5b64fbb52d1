#include "broker/client/kv.h"

#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::broker {
namespace {

auto log() { return fnmesh::logger("nats"); }

struct entry_deleter {
  void operator()(kvEntry* e) const noexcept { kvEntry_Destroy(e); }
};
using entry_ptr = std::unique_ptr<kvEntry, entry_deleter>;

}  // namespace

result<std::unique_ptr<kv_bucket>> kv_bucket::open(connection& conn, std::string_view bucket) {
  std::string name(bucket);
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, conn.js(), name.c_str());
  if (s == NATS_NOT_FOUND) return fail(errc::not_found);
  if (s != NATS_OK) return fail(make_nats_error(s));
  return std::unique_ptr<kv_bucket>(new kv_bucket(kv, conn.js(), std::move(name)));
}

kv_bucket::~kv_bucket() {
  stopping_.store(true);
  if (watcher_) kvWatcher_Stop(watcher_);
  if (watch_thread_.joinable()) watch_thread_.join();
  if (watcher_) kvWatcher_Destroy(watcher_);
  kvStore_Destroy(kv_);
}

result<std::optional<std::vector<uint8_t>>> kv_bucket::get(std::string_view key) {
  std::string k(key);
  kvEntry* raw = nullptr;
  natsStatus s = kvStore_Get(&raw, kv_, k.c_str());
  if (s == NATS_NOT_FOUND) return std::optional<std::vector<uint8_t>>{};
  if (s != NATS_OK) return fail(make_nats_error(s));
  entry_ptr e(raw);
  const auto* v = static_cast<const uint8_t*>(kvEntry_Value(e.get()));
  int n = kvEntry_ValueLen(e.get());
  return std::optional<std::vector<uint8_t>>(std::vector<uint8_t>(v, v + (n > 0 ? n : 0)));
}

result<void> kv_bucket::put(std::string_view key, std::span<const uint8_t> value) {
  std::string k(key);
  uint64_t rev = 0;
  natsStatus s = kvStore_Put(&rev, kv_, k.c_str(), value.data(), int(value.size()));
  if (s != NATS_OK) return fail(make_nats_error(s));
  return {};
}

result<void> kv_bucket::erase(std::string_view key) {
  std::string k(key);
  natsStatus s = kvStore_Delete(kv_, k.c_str());
  if (s != NATS_OK && s != NATS_NOT_FOUND) return fail(make_nats_error(s));
  return {};
}

result<std::vector<std::string>> kv_bucket::keys() {
  // The bucket's stream lists its subjects: no ephemeral consumer, which a cluster may
  // place on a server that is down. Deleted keys keep a subject: get() skips those.
  const std::string prefix = "$KV." + bucket_ + ".";
  jsOptions o;
  jsOptions_Init(&o);
  const std::string all = prefix + ">";
  o.Stream.Info.SubjectsFilter = all.c_str();
  jsStreamInfo* info = nullptr;
  natsStatus s = js_GetStreamInfo(&info, js_, ("KV_" + bucket_).c_str(), &o, nullptr);
  if (s != NATS_OK) return fail(make_nats_error(s));
  std::vector<std::string> subjects;
  if (const auto* list = info->State.Subjects)
    for (int i = 0; i < list->Count; ++i) subjects.emplace_back(list->List[i].Subject + prefix.size());
  jsStreamInfo_Destroy(info);
  std::vector<std::string> out;
  for (auto& key : subjects) {
    auto value = get(key);
    if (!value) return fail(value.error());
    if (value->has_value()) out.push_back(std::move(key));
  }
  return out;
}

result<void> kv_bucket::watch_all(change_handler on_change, std::function<void()> on_initial_done) {
  if (watcher_) return fail(errc::invalid_argument);
  kvWatcher* w = nullptr;
  natsStatus s = kvStore_WatchAll(&w, kv_, nullptr);
  if (s != NATS_OK) return fail(make_nats_error(s));
  watcher_ = w;
  watch_thread_ = std::thread([this, w, on_change = std::move(on_change),
                               on_initial_done = std::move(on_initial_done)]() mutable {
    while (!stopping_.load(std::memory_order_relaxed)) {
      kvEntry* raw = nullptr;
      natsStatus st = kvWatcher_Next(&raw, w, 500);
      if (st == NATS_TIMEOUT) continue;
      if (st != NATS_OK) {
        if (!stopping_.load()) log()->warn("kv watch ended: {}", natsStatus_GetText(st));
        break;
      }
      try {
        if (!raw) {
          if (on_initial_done) std::exchange(on_initial_done, nullptr)();
          continue;
        }
        entry_ptr e(raw);
        std::string key = kvEntry_Key(e.get());
        kvOperation op = kvEntry_Operation(e.get());
        if (op == kvOp_Delete || op == kvOp_Purge) {
          on_change(key, std::nullopt);
        } else {
          const auto* v = static_cast<const uint8_t*>(kvEntry_Value(e.get()));
          int n = kvEntry_ValueLen(e.get());
          on_change(key, std::span<const uint8_t>(v, size_t(n > 0 ? n : 0)));
        }
      } catch (const std::exception& ex) {
        log()->error("kv watch handler threw: {}", ex.what());
      } catch (...) {
        log()->error("kv watch handler threw");
      }
    }
    // A watch that ends before its initial values still releases whoever waits on them.
    if (on_initial_done) on_initial_done();
  });
  return {};
}

}  // namespace fnmesh::broker
