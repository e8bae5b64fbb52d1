#include "node/capacity.h"

#include <algorithm>

#include "common/log.h"

namespace fnmesh::node {

capacity::capacity(uint32_t slots, int64_t memory_bytes, issue_fn issue)
    : slots_(slots), memory_bytes_(memory_bytes), issue_(std::move(issue)) {}

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
  std::erase_if(functions_, [](const auto& kv) {
    const auto& f = kv.second;
    return !f.deployed && f.reserved == 0 && f.running == 0 && f.waiting_requests == 0;
  });
}

uint32_t capacity::room(const function_state& f) const {
  uint32_t n = slots_ - used_slots_;
  if (f.spec.memory_bytes > 0)
    n = uint32_t(std::clamp<int64_t>((memory_bytes_ - used_memory_) / f.spec.memory_bytes, 0, n));
  if (f.spec.concurrency > 0) {
    const uint32_t used = f.reserved + f.running;
    n = used >= f.spec.concurrency ? 0 : std::min(n, f.spec.concurrency - used);
  }
  return n;
}

bool capacity::issue(function_state& f, uint32_t batch) {
  auto id = issue_(f.spec.consumer, batch, f.hungry);
  if (!id) {
    logger("node")->warn("pull request to {} failed: {}", f.spec.consumer, id.error().message());
    return false;
  }
  requests_.emplace(*id, request{f.spec.consumer, batch, f.spec.memory_bytes});
  f.reserved += batch;
  f.waiting_requests += 1;
  used_slots_ += batch;
  used_memory_ += int64_t(batch) * f.spec.memory_bytes;
  return true;
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

  // Every function keeps one waiting request, so a first invocation is never stuck.
  for (auto* f : order)
    if (f->waiting_requests == 0 && room(*f) > 0) issue(*f, 1);

  // Functions with backlog share what is left, in batches of at least a quarter of the
  // slots: one request per freed slot would double the broker's work per invocation.
  std::vector<function_state*> hungry;
  for (auto* f : order)
    if (f->hungry) hungry.push_back(f);
  const uint32_t min_batch = std::max<uint32_t>(1, slots_ / 4);
  while (!hungry.empty() && slots_ - used_slots_ >= min_batch) {
    const uint32_t share = std::max<uint32_t>(1, (slots_ - used_slots_) / hungry.size());
    bool issued = false;
    for (auto* f : hungry) {
      const uint32_t n = std::min(share, room(*f));
      if (n > 0 && issue(*f, n)) issued = true;
    }
    if (!issued) break;
  }
}

void capacity::on_request_end(uint64_t request_id, int status, int64_t now_ms) {
  std::lock_guard lock(mutex_);
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return;  // fully served: already settled in on_delivery
  const request req = std::move(it->second);
  requests_.erase(it);
  auto& f = functions_.at(req.consumer);
  f.reserved -= req.remaining;
  f.waiting_requests -= 1;
  used_slots_ -= req.remaining;
  used_memory_ -= int64_t(req.remaining) * req.memory_each;
  f.hungry = false;
  if (status == 409 || status == 503) f.backoff_until_ms = now_ms + 1000;
  forget_if_idle(req.consumer);
}

std::optional<int64_t> capacity::on_delivery(const std::string& consumer, uint64_t request_id) {
  std::lock_guard lock(mutex_);
  auto fit = functions_.find(consumer);
  if (fit == functions_.end()) return std::nullopt;
  auto& f = fit->second;
  auto rit = requests_.find(request_id);
  if (rit != requests_.end() && rit->second.consumer == consumer && rit->second.remaining > 0) {
    const int64_t memory = rit->second.memory_each;
    f.reserved -= 1;
    f.running += 1;
    if (--rit->second.remaining == 0) {  // fully served: the function has backlog
      requests_.erase(rit);
      f.waiting_requests -= 1;
      f.hungry = true;
    }
    return memory;
  }
  // Its request already ended here: run it only if there is free room now.
  if (stopped_ || !f.deployed || room(f) == 0) return std::nullopt;
  f.running += 1;
  used_slots_ += 1;
  used_memory_ += f.spec.memory_bytes;
  return f.spec.memory_bytes;
}

void capacity::on_finished(const std::string& consumer, int64_t memory_bytes) {
  std::lock_guard lock(mutex_);
  auto it = functions_.find(consumer);
  if (it == functions_.end() || it->second.running == 0) return;
  it->second.running -= 1;
  used_slots_ -= 1;
  used_memory_ -= memory_bytes;
  forget_if_idle(consumer);
}

void capacity::forget_if_idle(const std::string& consumer) {
  auto it = functions_.find(consumer);
  const auto& f = it->second;
  if (!f.deployed && f.reserved == 0 && f.running == 0 && f.waiting_requests == 0)
    functions_.erase(it);
}

void capacity::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
}

uint32_t capacity::running() const {
  std::lock_guard lock(mutex_);
  uint32_t n = 0;
  for (const auto& [_, f] : functions_) n += f.running;
  return n;
}

uint32_t capacity::reserved() const {
  std::lock_guard lock(mutex_);
  uint32_t n = 0;
  for (const auto& [_, f] : functions_) n += f.reserved;
  return n;
}

}  // namespace fnmesh::node
