#include "trigger-adapters/fswatch/publisher.h"

#include <set>

#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::fswatch {
namespace {

auto log() { return fnmesh::logger("fswatch"); }

// Takes the async publishes still waiting for an ack (their acks are ignored from now on)
// and returns their ids.
std::set<std::string> take_pending(broker::connection& conn) {
  std::set<std::string> ids;
  natsMsgList pending{};
  if (js_PublishAsyncGetPendingList(&pending, conn.js()) != NATS_OK) return ids;
  for (int i = 0; i < pending.Count; ++i) {
    const char* id = nullptr;
    if (natsMsgHeader_Get(pending.Msgs[i], "Nats-Msg-Id", &id) == NATS_OK && id) ids.insert(id);
  }
  natsMsgList_Destroy(&pending);
  return ids;
}

}  // namespace

publisher::publisher(broker::connection& conn, broker::invoker& invoker,
                     const subscriptions& subs, counters& c, publisher_options opts)
    : conn_(conn), invoker_(invoker), subs_(subs), counters_(c), opts_(std::move(opts)) {
  thread_ = std::thread([this] { run(); });
}

publisher::~publisher() { stop(); }

void publisher::push(file_event e) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(e));
  }
  cv_.notify_one();
}

void publisher::stop() noexcept {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void publisher::run() {
  for (;;) {
    std::vector<file_event> events;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) {
        if (!queue_.empty())
          log()->warn("stopping with {} file events not published", queue_.size());
        return;
      }
      while (!queue_.empty() && events.size() < opts_.batch) {
        events.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    auto batch = prepare(std::move(events));
    auto backoff = std::chrono::milliseconds(100);
    publish_round(batch);
    while (!batch.empty()) {
      if (counters_.publish_failures.fetch_add(1, std::memory_order_relaxed) % 10 == 0)
        log()->warn("publishing {} invocations failed (NATS down?); retrying", batch.size());
      {
        std::unique_lock lock(mutex_);
        if (cv_.wait_for(lock, backoff, [this] { return stop_; })) {
          log()->warn("stopping with {} invocations not published", batch.size());
          return;
        }
      }
      backoff = std::min(backoff * 2, opts_.max_backoff);
      publish_round(batch);
    }
  }
}

std::vector<publisher::invocation> publisher::prepare(std::vector<file_event> events) {
  std::vector<invocation> out;
  for (auto& e : events) {
    const auto functions = subs_.subscribers(e.folder);
    if (functions.empty()) continue;  // unsubscribed since
    auto file = read_file(e.path, e.event);
    if (!file) {
      // Gone again, or not a regular file: nothing to report.
      if (file.error() == errc::not_found)
        log()->debug("{}: {} but gone or not a regular file now; skipped", e.path, name(e.event));
      else
        log()->warn("{}: cannot read: {}; skipped", e.path, file.error().message());
      continue;
    }
    const std::string payload = payload_json(*file);
    for (const auto& fn : functions) {
      out.push_back({fn, invocation_id(opts_.tenant, fn, *file), payload, file->path});
      log()->debug("{} {} -> {} ({})", name(e.event), e.path, fn, out.back().id);
    }
  }
  return out;
}

publisher::outcome publisher::publish(const invocation& inv, bool async) {
  broker::invocation_request req;
  req.invocation_id = inv.id;
  req.tenant = opts_.tenant;
  req.function = inv.function;
  req.payload = {reinterpret_cast<const uint8_t*>(inv.payload.data()), inv.payload.size()};
  req.trigger = proto::Trigger::file;
  req.source = inv.path;
  auto published = invoker_.invoke(req, async);
  if (published) {
    counters_.publishes.fetch_add(1, std::memory_order_relaxed);
    return outcome::sent;
  }
  const auto ec = published.error();
  if (ec == errc::not_found) return outcome::dropped;  // the function was removed since
  if (ec == errc::too_large || ec == errc::invalid_argument) {
    log()->warn("{}: not delivered to {}: {}", inv.path, inv.function, ec.message());
    return outcome::dropped;  // would fail again
  }
  log()->debug("publish to {} failed: {}", inv.function, ec.message());
  return outcome::failed;
}

void publisher::publish_round(std::vector<invocation>& todo) {
  const uint64_t failures_before = broker::connection::async_publish_failures();
  std::vector<outcome> out(todo.size(), outcome::failed);
  for (size_t i = 0; i < todo.size(); ++i)
    if ((out[i] = publish(todo[i], /*async=*/true)) == outcome::failed) break;  // NATS down
  (void)conn_.js_publish_async_complete(opts_.ack_wait);
  // Sent and not pending: acked, or refused by the stream (counted in async_publish_failures;
  // nats.c does not say which message). Then a synchronous publish tells which: a copy
  // stored moments ago is still within the duplicate window, so it is not stored twice.
  const std::set<std::string> pending = take_pending(conn_);
  const bool refused = broker::connection::async_publish_failures() != failures_before;
  std::vector<invocation> left;
  uint64_t acked = 0;
  bool nats_up = true;
  for (size_t i = 0; i < todo.size(); ++i) {
    if (out[i] == outcome::dropped) continue;
    bool unacked = out[i] == outcome::failed || pending.contains(todo[i].id);
    if (!unacked && refused) {  // asked again while NATS answers
      nats_up = nats_up && publish(todo[i], /*async=*/false) != outcome::failed;
      unacked = !nats_up;
    }
    if (unacked)
      left.push_back(std::move(todo[i]));
    else
      ++acked;
  }
  counters_.invocations.fetch_add(acked, std::memory_order_relaxed);
  todo = std::move(left);
}

}  // namespace fnmesh::fswatch
