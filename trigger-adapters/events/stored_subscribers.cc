#include "trigger-adapters/events/stored_subscribers.h"

#include <algorithm>

namespace fnmesh::events_adapter {

bool stored_subscribers::contains(uint64_t seq, std::string_view function_key) {
  auto it = events_.find(seq);
  if (it == events_.end()) return false;
  it->second.used = ++clock_;
  return std::ranges::find(it->second.stored, function_key) != it->second.stored.end();
}

void stored_subscribers::add(uint64_t seq, std::string_view function_key) {
  if (!events_.contains(seq) && events_.size() >= max_events_)
    events_.erase(std::ranges::min_element(events_, {}, [](const auto& e) {
      return e.second.used;
    }));
  auto& e = events_[seq];
  e.used = ++clock_;
  if (std::ranges::find(e.stored, function_key) == e.stored.end())
    e.stored.emplace_back(function_key);
}

}  // namespace fnmesh::events_adapter
