#include "node/capacity.h"

#include <algorithm>

#include "common/log.h"

namespace fnmesh::node {

capacity::capacity(uint32_t slots, int64_t memory_bytes, issue_fn issue, warm_fn warm)
    : slots_(slots), memory_bytes_(memory_bytes), issue_(std::move(issue)), warm_(std::move(warm)) {}

void capacity::set_functions(const std::vector<capacity_function>& functions) {
  std::lock_guard lock(mutex_);
  for (auto& [_, f] : functions_) f.deployed = false;
  for (const auto& spec : functions) {
    auto& f = functions_[spec.consumer];
    if (f.spec.memory_bytes != spec.memory_bytes && spec.memory_bytes > memory_bytes_)
      logger("node")->warn("{} needs {} MiB: more than this node's whole budget of {} MiB",
                           spec.consumer, spec.memory_bytes >> 20, memory_bytes_ >> 20);
    f.spec = spec;
    f.deployed = true;
  }
  std::erase_if(functions_, [](const auto& kv) { return !kv.second.deployed && kv.second.used() == 0; });
}

void capacity::on_backlog(const std::string& consumer) {
  std::lock_guard lock(mutex_);
  // While a sandbox here waits on the server, nothing of this function is queued there
  // (JetStream serves waiting requests first): a no-wait pull would find nothing.
  if (auto it = functions_.find(consumer); it != functions_.end() && it->second.warm_reserved == 0)
    it->second.backlog = true;
}

uint32_t capacity::room(const function_state& f, const held& taken) const {
  uint32_t n = taken.slots >= slots_ ? 0 : slots_ - taken.slots;
  if (f.spec.memory_bytes > 0)
    n = uint32_t(std::clamp<int64_t>((memory_bytes_ - taken.memory) / f.spec.memory_bytes, 0, n));
  if (f.spec.concurrency > 0)
    n = f.used() >= f.spec.concurrency ? 0 : std::min(n, f.spec.concurrency - f.used());
  return n;
}

bool capacity::issue(function_state& f, uint32_t batch, pull_kind kind) {
  auto id = issue_(f.spec.consumer, batch, kind);
  if (!id) {
    logger("node")->warn("pull request to {} failed: {}", f.spec.consumer, id.error().message());
    return false;
  }
  requests_.emplace(*id, request{f.spec.consumer, kind, batch, f.spec.memory_bytes});
  (kind == pull_kind::warm ? f.warm_reserved : f.cold_reserved) += batch;
  (kind == pull_kind::warm ? warm_reserved_ : cold_reserved_).add(int32_t(batch), f.spec.memory_bytes);
  return true;
}

void capacity::release(function_state& f, pull_kind kind, uint32_t n, int64_t memory_each) {
  (kind == pull_kind::warm ? f.warm_reserved : f.cold_reserved) -= n;
  (kind == pull_kind::warm ? warm_reserved_ : cold_reserved_).add(-int32_t(n), memory_each);
}

void capacity::refill(int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (stopped_ || functions_.empty()) return;
  std::vector<function_state*> order;
  for (auto& [_, f] : functions_)
    if (f.deployed && f.backoff_until_ms <= now_ms) order.push_back(&f);
  if (order.empty()) return;
  std::sort(order.begin(), order.end(),
            [](auto* a, auto* b) { return a->spec.consumer < b->spec.consumer; });
  std::rotate(order.begin(), order.begin() + (round_robin_++ % order.size()), order.end());

  // Every idle warm sandbox waits on its function's consumer.
  for (auto* f : order) {
    const uint32_t live = warm_(f->spec.function);
    const uint32_t busy = f->running + f->warm_reserved;
    if (live <= busy) continue;
    const uint32_t n = std::min(live - busy, room(*f, running_ + warm_reserved_ + cold_reserved_));
    if (n > 0) issue(*f, n, pull_kind::warm);
  }
  // A function with backlog takes what the node can start now. Other functions' idle
  // sandboxes do not hold it back: their requests only wait, and an invocation that
  // reaches one of them when the node is full is handed back.
  for (auto* f : order) {
    if (!f->backlog || f->cold_reserved > 0) continue;
    const held own_waiting{f->warm_reserved, int64_t(f->warm_reserved) * f->spec.memory_bytes};
    const uint32_t n = room(*f, running_ + cold_reserved_ + own_waiting);
    if (n > 0 && issue(*f, n, pull_kind::cold)) f->backlog = false;
  }
}

void capacity::on_request_end(uint64_t request_id, int status, int64_t now_ms) {
  std::lock_guard lock(mutex_);
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return;  // fully served: already settled in on_delivery
  const request req = std::move(it->second);
  requests_.erase(it);
  auto& f = functions_.at(req.consumer);
  release(f, req.kind, req.remaining, req.memory_each);
  if (status == 409 || status == 503) f.backoff_until_ms = now_ms + 1000;
  forget_if_idle(req.consumer);
}

std::optional<int64_t> capacity::on_delivery(const std::string& consumer, uint64_t request_id) {
  std::lock_guard lock(mutex_);
  auto fit = functions_.find(consumer);
  if (fit == functions_.end()) return std::nullopt;
  auto& f = fit->second;
  const bool fits = running_.slots < slots_ && running_.memory + f.spec.memory_bytes <= memory_bytes_;
  auto rit = requests_.find(request_id);
  if (rit != requests_.end() && rit->second.consumer == consumer && rit->second.remaining > 0) {
    auto& req = rit->second;
    const pull_kind kind = req.kind;
    release(f, kind, 1, req.memory_each);
    if (--req.remaining == 0) {
      requests_.erase(rit);
      if (kind == pull_kind::cold) f.backlog = true;  // it took all it asked for: more may wait
    }
    if (stopped_ || !fits) return std::nullopt;  // draining, or a borrowed slot is taken by now
  } else if (stopped_ || !f.deployed || !fits || room(f, running_) == 0) {
    return std::nullopt;  // its request already ended here, and there is no free room now
  }
  f.running += 1;
  running_.add(1, f.spec.memory_bytes);
  return f.spec.memory_bytes;
}

void capacity::on_finished(const std::string& consumer, int64_t memory_bytes) {
  std::lock_guard lock(mutex_);
  auto it = functions_.find(consumer);
  if (it == functions_.end() || it->second.running == 0) return;
  it->second.running -= 1;
  running_.add(-1, memory_bytes);
  forget_if_idle(consumer);
}

void capacity::forget_if_idle(const std::string& consumer) {
  auto it = functions_.find(consumer);
  if (!it->second.deployed && it->second.used() == 0) functions_.erase(it);
}

void capacity::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
}

uint32_t capacity::running() const {
  std::lock_guard lock(mutex_);
  return running_.slots;
}

uint32_t capacity::reserved() const {
  std::lock_guard lock(mutex_);
  return warm_reserved_.slots + cold_reserved_.slots;
}

}  // namespace fnmesh::node
