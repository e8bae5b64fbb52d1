#include "trigger-adapters/fswatch/adapter.h"

#include <spdlog/fmt/fmt.h>

#include <stdexcept>

#include "broker/client/subjects.h"
#include "common/log.h"

namespace fnmesh::fswatch {

std::string render_metrics(const counters& c) {
  std::string out =
      "# HELP fnmesh_fswatch_events_total File events seen in watched folders.\n"
      "# TYPE fnmesh_fswatch_events_total counter\n";
  for (auto k : all_event_kinds)
    out += fmt::format("fnmesh_fswatch_events_total{{event=\"{}\"}} {}\n", name(k),
                       c.events[size_t(k)].load(std::memory_order_relaxed));
  auto one = [&out](const char* metric, const char* type, const char* help, uint64_t v) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", metric, help, type, v);
  };
  one("fnmesh_fswatch_invocations_total", "counter",
      "Invocations published and acked by the stream.", c.invocations.load());
  one("fnmesh_fswatch_publish_failures_total", "counter",
      "Publish rounds that failed and were retried.", c.publish_failures.load());
  one("fnmesh_fswatch_overflows_total", "counter",
      "inotify queue overflows (file events lost).", c.overflows.load());
  one("fnmesh_fswatch_watched_folders", "gauge", "Folders watched now.",
      c.watched_folders.load());
  return out;
}

adapter::adapter(broker::connection& conn, adapter_options opts, counters& c)
    : opts_(std::move(opts)), watcher_(subs_, c, opts_.retry) {
  if (!broker::valid_name(opts_.tenant))
    throw std::runtime_error("invalid tenant name '" + opts_.tenant + "'");
  // The handler runs for every function loaded, then for each deploy or removal.
  auto registry = broker::function_registry::open(
      conn, [this](const std::string& key, broker::function_ptr record) { on_change(key, record); });
  if (!registry)
    throw std::runtime_error("cannot read the function registry (KV FNMESH_FUNCTIONS) at " +
                             conn.urls() + ": " + registry.error().message());
  registry_ = std::move(*registry);
  invoker_ = std::make_unique<broker::invoker>(conn, registry_.get());
  publisher_ = std::make_unique<publisher>(conn, *invoker_, subs_, c,
                                           publisher_options{.tenant = opts_.tenant});
  watcher_.start([p = publisher_.get()](file_event e) { p->push(std::move(e)); });
  logger("fswatch")->info("{} folders subscribed by the functions of tenant {}", subs_.folders().size(),
                          opts_.tenant);
}

adapter::~adapter() {
  watcher_.stop();  // no more events for the publisher
  publisher_.reset();
  invoker_.reset();
  registry_.reset();  // no more changes for the watcher
}

void adapter::on_change(const std::string& key, const broker::function_ptr& record) {
  const bool changed =
      record ? subs_.set(key, std::string(proto::view(record->spec().name())),
                         folders_of(record->spec(), opts_.tenant))
             : subs_.remove(key);
  if (changed) watcher_.refresh();
}

void adapter::run() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return stop_; });
}

void adapter::stop() noexcept {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
}

}  // namespace fnmesh::fswatch
