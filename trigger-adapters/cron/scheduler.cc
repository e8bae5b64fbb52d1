#include "trigger-adapters/cron/scheduler.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>

#include "broker/client/event_id.h"
#include "broker/client/subjects.h"
#include "common/errc.h"
#include "common/log.h"
#include "common/metrics_endpoint.h"

namespace fnmesh::cron {
namespace {

using clock = std::chrono::system_clock;

auto log() { return fnmesh::logger("cron"); }

std::string iso_utc(std::chrono::sys_seconds t) {
  const std::time_t s = t.time_since_epoch().count();
  std::tm tm{};
  gmtime_r(&s, &tm);
  char out[32];
  std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return out;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

}  // namespace

std::string invocation_id(std::string_view tenant, const tick& t) {
  const int64_t ns = int64_t(t.time.time_since_epoch().count()) * 1'000'000'000;
  return broker::event_invocation_id(ns, 0, broker::function_key(tenant, t.function));
}

std::string payload(const tick& t) {
  nlohmann::ordered_json j;
  j["schedule"] = t.expression;
  j["tick"] = iso_utc(t.time);
  j["function"] = t.function;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

result<void> publish(broker::invoker& invoker, std::string_view tenant, const tick& t) {
  const std::string body = payload(t);
  broker::invocation_request req;
  req.invocation_id = invocation_id(tenant, t);
  req.tenant = std::string(tenant);
  req.function = t.function;
  req.payload = {reinterpret_cast<const uint8_t*>(body.data()), body.size()};
  req.trigger = proto::Trigger::cron;
  req.source = t.expression;
  auto sent = invoker.invoke(req);
  if (!sent) return fail(sent.error());
  return {};
}

scheduler::scheduler(std::string tenant, std::chrono::seconds retry_for,
                     std::chrono::milliseconds retry_every)
    : tenant_(std::move(tenant)), retry_for_(retry_for), retry_every_(retry_every) {}

void scheduler::update(const std::string& key, const broker::function_ptr& record) {
  const std::string prefix = tenant_ + ".";
  if (!key.starts_with(prefix)) return;
  const std::string function = key.substr(prefix.size());
  std::vector<std::string> expressions;
  if (const auto* triggers = record ? record->spec().triggers() : nullptr;
      triggers && triggers->cron())
    for (const auto* e : *triggers->cron())
      if (std::find(expressions.begin(), expressions.end(), e->str()) == expressions.end())
        expressions.push_back(e->str());
  const auto now = std::chrono::floor<std::chrono::seconds>(clock::now());

  std::lock_guard lock(mutex_);
  const auto mine = std::stable_partition(armed_.begin(), armed_.end(),
                                          [&](const armed& a) { return a.function != function; });
  std::vector<armed> before(std::make_move_iterator(mine), std::make_move_iterator(armed_.end()));
  armed_.erase(mine, armed_.end());
  std::vector<std::string> was, is;
  for (const auto& a : before) was.push_back(a.expression);
  for (const auto& e : expressions) {
    auto kept = std::find_if(before.begin(), before.end(),
                             [&](const armed& a) { return a.expression == e; });
    if (kept != before.end()) {
      armed_.push_back(std::move(*kept));
    } else if (auto s = schedule::parse(e); !s) {
      log()->warn("{}: ignoring cron expression '{}': {}", function, e, s.error());
      continue;
    } else {
      armed_.push_back({function, e, *s, s->next_after(now)});
    }
    is.push_back(e);
  }
  schedules_ = armed_.size();
  if (is != was)
    log()->info("{}: {} schedule{}{}; {} in all", function, is.size(), is.size() == 1 ? "" : "s",
                is.empty() ? "" : " (" + joined(is) + ")", armed_.size());
  wake_.notify_one();
}

void scheduler::run(const publish_fn& publish) {
  std::vector<retry> retries;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    const auto now = clock::now();
    // Behind by more than a retry lasts (a clock jump, a stall): what is that old is skipped.
    const auto oldest = std::chrono::floor<std::chrono::seconds>(now) - retry_for_;
    std::vector<tick> due;
    for (auto& a : armed_) {
      if (a.next < oldest) a.next = a.when.next_after(oldest);
      for (; a.next <= now; a.next = a.when.next_after(a.next))
        due.push_back({a.function, a.expression, a.next});
    }
    lock.unlock();
    std::vector<retry> later;
    for (auto& r : retries) {
      if (r.at > now)
        later.push_back(std::move(r));
      else
        attempt(publish, std::move(r.due), r.attempts, later);
    }
    std::sort(due.begin(), due.end(), [](const tick& a, const tick& b) { return a.time < b.time; });
    for (auto& t : due) attempt(publish, std::move(t), 0, later);
    retries = std::move(later);
    lock.lock();
    if (stopping_) break;
    auto wake = clock::time_point::max();
    for (const auto& a : armed_) wake = std::min<clock::time_point>(wake, a.next);
    for (const auto& r : retries) wake = std::min(wake, r.at);
    if (wake == clock::time_point::max())
      wake_.wait(lock);
    else
      wake_.wait_until(lock, wake);
  }
  if (!retries.empty()) log()->warn("stopping with {} unpublished ticks", retries.size());
}

void scheduler::attempt(const publish_fn& publish, tick due, int attempts,
                        std::vector<retry>& retries) {
  ++attempts;
  auto sent = publish(due);
  if (sent) {
    ++published_;
    if (attempts > 1)
      log()->info("{}: tick {} of '{}' published at attempt {}", due.function, iso_utc(due.time),
                  due.expression, attempts);
    return;
  }
  ++failures_;
  const auto now = clock::now();
  if (sent.error() == errc::not_found) {
    log()->info("{}: tick {} dropped: the function is no longer deployed", due.function,
                iso_utc(due.time));
  } else if (now - due.time >= retry_for_) {
    log()->error("{}: tick {} of '{}' not published after {} attempts over {} s: {}", due.function,
                 iso_utc(due.time), due.expression, attempts, retry_for_.count(),
                 sent.error().message());
  } else {
    if (attempts == 1)
      log()->warn("{}: publishing tick {} of '{}' failed ({}); retrying for up to {} s",
                  due.function, iso_utc(due.time), due.expression, sent.error().message(),
                  retry_for_.count());
    retries.push_back({std::move(due), now + retry_every_, attempts});
  }
}

void scheduler::stop() {
  std::lock_guard lock(mutex_);
  stopping_ = true;
  wake_.notify_one();
}

std::string scheduler::metrics() const {
  std::string out;
  append_metric(out, "fnmesh_cron_ticks_total", "counter", "Ticks published as invocations.",
                published_);
  append_metric(out, "fnmesh_cron_publish_failures_total", "counter",
                "Failed publishes of a tick (each retry counts).", failures_);
  append_metric(out, "fnmesh_cron_schedules", "gauge",
                "Cron expressions followed, over all functions.", schedules_);
  return out;
}

}  // namespace fnmesh::cron
