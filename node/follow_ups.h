#pragma once
// follow_ups: what comes after a failed async attempt — publishing its retry or dead
// letter, then acking — run in order on a thread of their own. In a cluster a publish may
// wait out a leader election for seconds; the executor's loop (which reads every
// sandbox's result) and nats.c's delivery thread must never wait with it. Owns that
// thread; post() from any thread.
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace fnmesh::node {

class follow_ups {
 public:
  follow_ups();
  ~follow_ups();  // runs what is queued, then joins

  void post(std::function<void()> fn);

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

}  // namespace fnmesh::node
