#include "trigger-adapters/fswatch/watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "common/log.h"

namespace fnmesh::fswatch {
namespace {

auto log() { return fnmesh::logger("fswatch"); }

unique_fd checked(int fd, const char* what) {
  if (fd < 0) throw std::system_error(errno, std::system_category(), what);
  return unique_fd(fd);
}

}  // namespace

watcher::watcher(const subscriptions& subs, counters& c, std::chrono::milliseconds retry)
    : subs_(subs),
      counters_(c),
      retry_(retry),
      inotify_(checked(inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")),
      wake_(checked(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd")) {}

watcher::~watcher() { stop(); }

void watcher::start(sink on_event) {
  sink_ = std::move(on_event);
  thread_ = std::thread([this] { run(); });
}

void watcher::wake() noexcept {
  const uint64_t one = 1;
  (void)::write(wake_.get(), &one, sizeof one);
}

void watcher::refresh() noexcept { wake(); }

void watcher::stop() noexcept {
  stop_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
}

void watcher::run() {
  using clock = std::chrono::steady_clock;
  reconcile();
  auto next_retry = clock::now() + retry_;
  while (!stop_) {
    pollfd fds[] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    const auto until_retry =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_retry - clock::now());
    const int timeout = missing_.empty() ? -1 : int(std::max<int64_t>(0, until_retry.count()));
    if (::poll(fds, 2, timeout) < 0 && errno != EINTR) {
      log()->error("poll: {}", std::strerror(errno));
      return;
    }
    if (fds[0].revents & POLLIN) read_events();
    bool changed = false;
    if (fds[1].revents & POLLIN) {
      uint64_t count = 0;
      changed = ::read(wake_.get(), &count, sizeof count) > 0;
    }
    if (changed || (!missing_.empty() && clock::now() >= next_retry)) {
      reconcile();
      next_retry = clock::now() + retry_;
    }
  }
}

void watcher::reconcile() {
  const auto wanted = subs_.folders();
  for (auto it = wd_of_.begin(); it != wd_of_.end();) {
    if (wanted.contains(it->first)) {
      ++it;
      continue;
    }
    const int wd = it->second;
    auto& aliases = folders_of_[wd];
    std::erase(aliases, it->first);
    if (aliases.empty()) {
      folders_of_.erase(wd);
      tracker_.forget(wd);
      inotify_rm_watch(inotify_.get(), wd);
    }
    log()->info("no longer watching {}", it->first);
    it = wd_of_.erase(it);
  }
  std::erase_if(missing_, [&](const std::string& f) { return !wanted.contains(f); });

  for (const auto& folder : wanted) {
    if (wd_of_.contains(folder)) continue;
    const int wd = inotify_add_watch(inotify_.get(), folder.c_str(), watch_mask);
    if (wd < 0) {
      if (missing_.insert(folder).second)
        log()->warn("cannot watch {}: {} (retrying every {} ms)", folder, std::strerror(errno),
                    retry_.count());
      continue;
    }
    missing_.erase(folder);
    wd_of_[folder] = wd;
    folders_of_[wd].push_back(folder);
    log()->info("watching {}", folder);
  }
  counters_.watched_folders.store(wd_of_.size(), std::memory_order_relaxed);
}

void watcher::drop(int wd, const char* why) {
  auto it = folders_of_.find(wd);
  if (it == folders_of_.end()) return;  // already dropped (IN_IGNORED after our rm_watch)
  for (const auto& folder : it->second) {
    wd_of_.erase(folder);
    if (missing_.insert(folder).second)
      log()->warn("{} {}; no longer watched (retrying every {} ms)", folder, why, retry_.count());
  }
  folders_of_.erase(it);
  tracker_.forget(wd);
  inotify_rm_watch(inotify_.get(), wd);  // fails harmlessly when the kernel removed it
  counters_.watched_folders.store(wd_of_.size(), std::memory_order_relaxed);
}

void watcher::read_events() {
  alignas(inotify_event) char buf[64 << 10];
  for (;;) {
    const ssize_t len = ::read(inotify_.get(), buf, sizeof buf);
    if (len < 0 && errno == EINTR) continue;
    if (len <= 0) return;  // EAGAIN: drained
    for (ssize_t off = 0; off < len;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += ssize_t(sizeof(inotify_event) + ev->len);
      if (ev->mask & IN_Q_OVERFLOW) {
        counters_.overflows.fetch_add(1, std::memory_order_relaxed);
        log()->warn("inotify queue overflowed: file events were lost (raise "
                    "fs.inotify.max_queued_events)");
        continue;
      }
      if (ev->mask & (IN_IGNORED | IN_DELETE_SELF)) {
        drop(ev->wd, "was removed");
        continue;
      }
      if (ev->mask & IN_MOVE_SELF) {
        drop(ev->wd, "was moved away");
        continue;
      }
      auto folders = folders_of_.find(ev->wd);
      if (folders == folders_of_.end() || ev->len == 0) continue;
      const auto kind = tracker_.on_event(ev->wd, ev->name, ev->mask, event_tracker::clock::now());
      if (!kind) continue;
      for (const auto& folder : folders->second) {
        counters_.count(*kind);
        sink_(file_event{folder, folder == "/" ? "/" + std::string(ev->name)
                                               : folder + "/" + ev->name, *kind});
      }
    }
  }
}

}  // namespace fnmesh::fswatch
