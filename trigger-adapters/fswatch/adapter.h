#pragma once
// adapter: the fswatch trigger adapter put together. Owns the subscriptions (kept current
// by its subscription to the daemon's function registry), the inotify watcher and the
// publisher. Watches and publishes from construction to destruction; built by main(),
// which waits for the stop signal itself.
#include <chrono>
#include <memory>
#include <string>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "trigger-adapters/fswatch/counters.h"
#include "trigger-adapters/fswatch/publisher.h"
#include "trigger-adapters/fswatch/subscriptions.h"
#include "trigger-adapters/fswatch/watcher.h"

namespace fnmesh::fswatch {

struct adapter_options {
  std::string tenant;
  std::chrono::milliseconds retry{2000};  // a missing folder is tried again this often
};

class adapter {
 public:
  // Starts watching the folders of opts.tenant's functions. Throws std::runtime_error with
  // one clear line (start-up only). `registry` and `invoker` outlive the adapter.
  adapter(broker::connection& conn, broker::function_registry& registry, broker::invoker& invoker,
          adapter_options opts, counters& c);
  ~adapter();
  adapter(const adapter&) = delete;
  adapter& operator=(const adapter&) = delete;

 private:
  void on_change(const std::string& key, const broker::function_ptr& record);

  const adapter_options opts_;
  broker::function_registry& registry_;
  subscriptions subs_;
  watcher watcher_;
  std::unique_ptr<publisher> publisher_;
};

}  // namespace fnmesh::fswatch
