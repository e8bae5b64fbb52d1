#include "node/follow_ups.h"

#include "common/log.h"

namespace fnmesh::node {

follow_ups::follow_ups() : thread_([this] { run(); }) {}

follow_ups::~follow_ups() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void follow_ups::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(fn));
  }
  wake_.notify_one();
}

void follow_ups::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything ran
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    try {
      fn();
    } catch (const std::exception& e) {
      logger("node")->error("follow-up failed: {}", e.what());
    }
    lock.lock();
  }
}

}  // namespace fnmesh::node
