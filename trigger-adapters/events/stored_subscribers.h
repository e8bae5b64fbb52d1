#pragma once
// stored_subscribers: for each event not yet acked, the subscribers (function keys) whose
// invocation is already stored, so that a redelivered event publishes only the missing
// ones. JetStream's duplicate window on FNMESH_INVOKE lasts 2 minutes; a redelivery after
// a longer NATS outage would otherwise run those functions a second time. In memory and
// bounded: beyond max_events, the event looked up or added to least recently is dropped.
// Owned by the dispatcher; touched only by its run() thread.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fnmesh::events_adapter {

class stored_subscribers {
 public:
  explicit stored_subscribers(size_t max_events) : max_events_(max_events) {}  // > 0

  // Whether the invocation of `function_key` for the event at stream sequence `seq` is
  // stored. A look-up counts as a use: an event being retried is not the next one dropped.
  bool contains(uint64_t seq, std::string_view function_key);
  void add(uint64_t seq, std::string_view function_key);
  // The event is acked: nothing more to remember about it.
  void forget(uint64_t seq) { events_.erase(seq); }
  size_t events() const { return events_.size(); }

 private:
  struct event {
    std::vector<std::string> stored;
    uint64_t used = 0;
  };

  size_t max_events_;
  uint64_t clock_ = 0;
  std::unordered_map<uint64_t, event> events_;
};

}  // namespace fnmesh::events_adapter
