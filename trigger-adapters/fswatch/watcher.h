#pragma once
// watcher: the inotify side of the fswatch adapter. Owns the inotify fd, an eventfd that
// wakes it, and one thread that keeps one watch per subscribed folder (a folder that is
// missing, or goes away, is logged once and retried every `retry`), reads the events and
// hands each reported file to the sink. refresh() and stop() may be called from any
// thread; the sink runs on the watcher's thread.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "trigger-adapters/fswatch/counters.h"
#include "trigger-adapters/fswatch/file_event.h"
#include "trigger-adapters/fswatch/subscriptions.h"

namespace fnmesh::fswatch {

struct file_event {
  std::string folder;  // as subscribed
  std::string path;    // folder/name
  event_kind event;
};

class watcher {
 public:
  using sink = std::function<void(file_event)>;

  // Throws std::system_error when inotify is unavailable (start-up only).
  watcher(const subscriptions& subs, counters& c,
          std::chrono::milliseconds retry = std::chrono::seconds(2));
  ~watcher();  // stop()
  watcher(const watcher&) = delete;
  watcher& operator=(const watcher&) = delete;

  void start(sink on_event);
  void refresh() noexcept;  // the subscriptions changed
  void stop() noexcept;     // joins the thread (not from the sink)

 private:
  void run();
  void reconcile();  // watches = subscribed folders
  void read_events();
  void drop(int wd, const char* why);  // the folder(s) of wd are gone: retry them
  void wake() noexcept;

  const subscriptions& subs_;
  counters& counters_;
  const std::chrono::milliseconds retry_;
  unique_fd inotify_;
  unique_fd wake_;  // eventfd
  sink sink_;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  // Watcher thread only.
  std::map<std::string, int> wd_of_;                     // watched folder -> wd
  std::map<int, std::vector<std::string>> folders_of_;   // wd -> folders (aliases share one)
  std::set<std::string> missing_;                        // subscribed, not watchable (logged)
  event_tracker tracker_;
};

}  // namespace fnmesh::fswatch
