#pragma once
// publisher: the NATS side of the fswatch adapter. Owns a queue of file events and one
// thread that takes them in batches, reads and hashes each file, builds one invocation per
// subscribed function and publishes the batch asynchronously, then waits for the stream's
// acks. What is not acked (NATS down, restarting) is published again with the same ids
// after a backoff, so JetStream's duplicate window keeps one copy; an invocation once acked
// is never published again. push() and stop() may be called from any thread.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "broker/client/connection.h"
#include "broker/client/invoker.h"
#include "trigger-adapters/fswatch/counters.h"
#include "trigger-adapters/fswatch/subscriptions.h"
#include "trigger-adapters/fswatch/watcher.h"

namespace fnmesh::fswatch {

struct publisher_options {
  std::string tenant;
  size_t batch = 256;                                   // file events per round
  std::chrono::milliseconds ack_wait{2000};             // for a round's acks
  std::chrono::milliseconds max_backoff{2000};          // between failed rounds
};

class publisher {
 public:
  publisher(broker::connection& conn, broker::invoker& invoker, const subscriptions& subs,
            counters& c, publisher_options opts);
  ~publisher();  // stop()
  publisher(const publisher&) = delete;
  publisher& operator=(const publisher&) = delete;

  void push(file_event e);
  // Ends the round in hand (no more retries) and joins; queued events are dropped (logged).
  void stop() noexcept;

 private:
  struct invocation {
    std::string function;
    std::string id;
    std::string payload;
    std::string path;
  };

  enum class outcome { sent, dropped, failed };  // dropped: would never be delivered

  void run();
  std::vector<invocation> prepare(std::vector<file_event> events);
  // Publishes `todo` and keeps in it only what the stream did not ack.
  void publish_round(std::vector<invocation>& todo);
  outcome publish(const invocation& inv, bool async);

  broker::connection& conn_;
  broker::invoker& invoker_;
  const subscriptions& subs_;
  counters& counters_;
  const publisher_options opts_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<file_event> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fnmesh::fswatch
