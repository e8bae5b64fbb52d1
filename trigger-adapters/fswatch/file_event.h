#pragma once
// The pure half of the fswatch adapter: which inotify events are reported and as what,
// what a reported file looks like (read and hashed from disk), and the invocation a
// subscriber gets for it (payload and deterministic id). No threads of its own.
#include <sys/inotify.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace fnmesh::fswatch {

enum class event_kind { created, modified, moved_in };
inline constexpr event_kind all_event_kinds[] = {event_kind::created, event_kind::modified,
                                                 event_kind::moved_in};
const char* name(event_kind k) noexcept;

// What the watch of each folder asks inotify for.
inline constexpr uint32_t watch_mask = IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE |
                                       IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

// Turns inotify events into reported ones: a file written and closed is "created" when its
// IN_CREATE was seen, else "modified"; a file moved in is "moved_in"; directories and the
// events that only feed this bookkeeping are not reported. A name whose IN_CREATE is
// followed by no close-for-write (a hard link, symlink or device node) is forgotten after
// create_ttl; so is a file still being written then, whose close is reported as "modified".
// Used by one thread.
class event_tracker {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::minutes create_ttl{60};

  std::optional<event_kind> on_event(int wd, std::string_view name, uint32_t mask,
                                     clock::time_point now);
  void forget(int wd);  // the watch is gone
  size_t created() const noexcept;  // names created and not yet closed, moved or deleted

 private:
  void expire(clock::time_point now);

  // By watch: created, not closed, and when.
  std::map<int, std::map<std::string, clock::time_point, std::less<>>> created_;
  clock::time_point next_expiry_{};
};

// A reported file as read: size and sha256 (hex) of the bytes read, its mtime.
struct file_info {
  std::string path;
  uint64_t size = 0;
  std::string sha256;
  int64_t mtime_ns = 0;  // unix ns
  event_kind event = event_kind::created;
};

// Opens, checks it is a regular file and streams it through sha256 (never whole in
// memory). errc::not_found when it is gone or not a regular file.
result<file_info> read_file(const std::filesystem::path& path, event_kind event);

// {"path","size","sha256","event","mtime"}; mtime as RFC 3339 UTC with nanoseconds.
std::string payload_json(const file_info& f);

// The same for every adapter that sees this file event: event_invocation_id(mtime, size,
// "<tenant>.<function>\n<path>\n<sha256>").
std::string invocation_id(std::string_view tenant, std::string_view function,
                          const file_info& f);

}  // namespace fnmesh::fswatch
