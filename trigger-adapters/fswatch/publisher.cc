#include "trigger-adapters/fswatch/publisher.h"

#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::fswatch {
namespace {

auto log() { return fnmesh::logger("fswatch"); }

// Forgets the async publishes still waiting for an ack: the round is published again.
void drop_pending(broker::connection& conn) {
  natsMsgList pending{};
  if (js_PublishAsyncGetPendingList(&pending, conn.js()) == NATS_OK) natsMsgList_Destroy(&pending);
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
    const auto batch = prepare(std::move(events));
    auto backoff = std::chrono::milliseconds(100);
    while (!batch.empty() && !publish_round(batch)) {
      if (counters_.publish_failures.fetch_add(1, std::memory_order_relaxed) % 10 == 0)
        log()->warn("publishing {} invocations failed (NATS down?); retrying", batch.size());
      std::unique_lock lock(mutex_);
      if (cv_.wait_for(lock, backoff, [this] { return stop_; })) {
        log()->warn("stopping with {} invocations not published", batch.size());
        return;
      }
      backoff = std::min(backoff * 2, opts_.max_backoff);
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

bool publisher::publish_round(const std::vector<invocation>& batch) {
  const uint64_t failures_before = broker::connection::async_publish_failures();
  size_t sent = 0;
  for (const auto& inv : batch) {
    broker::invocation_request req;
    req.invocation_id = inv.id;
    req.tenant = opts_.tenant;
    req.function = inv.function;
    req.payload = {reinterpret_cast<const uint8_t*>(inv.payload.data()), inv.payload.size()};
    req.trigger = proto::Trigger::file;
    req.source = inv.path;
    auto published = invoker_.invoke(req, /*async_publish=*/true);
    if (published) {
      ++sent;
      continue;
    }
    const auto ec = published.error();
    if (ec == errc::not_found) continue;  // the function was removed since
    if (ec == errc::too_large || ec == errc::invalid_argument) {
      log()->warn("{}: not delivered to {}: {}", inv.path, inv.function, ec.message());
      continue;  // would fail again
    }
    log()->debug("publish to {} failed: {}", inv.function, ec.message());
    drop_pending(conn_);
    return false;
  }
  const auto acked = conn_.js_publish_async_complete(opts_.ack_wait);
  if (!acked || broker::connection::async_publish_failures() != failures_before) {
    drop_pending(conn_);
    return false;
  }
  counters_.invocations.fetch_add(sent, std::memory_order_relaxed);
  return true;
}

}  // namespace fnmesh::fswatch
