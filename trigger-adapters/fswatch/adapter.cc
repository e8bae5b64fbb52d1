#include "trigger-adapters/fswatch/adapter.h"

#include <spdlog/fmt/fmt.h>

#include <stdexcept>

#include "broker/client/subjects.h"
#include "common/log.h"
#include "common/metrics_endpoint.h"

namespace fnmesh::fswatch {

std::string render_metrics(const counters& c) {
  std::string out;
  append_metric_header(out, "fnmesh_fswatch_events_total", "counter",
                       "File events seen in watched folders.");
  for (auto k : all_event_kinds)
    out += fmt::format("fnmesh_fswatch_events_total{{event=\"{}\"}} {}\n", name(k),
                       c.events[size_t(k)].load(std::memory_order_relaxed));
  append_metric(out, "fnmesh_fswatch_invocations_total", "counter",
                "Invocations published and acked by the stream.", c.invocations.load());
  append_metric(out, "fnmesh_fswatch_publishes_total", "counter",
                "Invocations handed to NATS, each publish again of an unacked one included.",
                c.publishes.load());
  append_metric(out, "fnmesh_fswatch_publish_failures_total", "counter",
                "Publish rounds that failed and were retried.", c.publish_failures.load());
  append_metric(out, "fnmesh_fswatch_overflows_total", "counter",
                "inotify queue overflows (file events lost).", c.overflows.load());
  append_metric(out, "fnmesh_fswatch_watched_folders", "gauge", "Folders watched now.",
                c.watched_folders.load());
  return out;
}

adapter::adapter(broker::connection& conn, broker::function_registry& registry,
                 broker::invoker& invoker, adapter_options opts, counters& c)
    : opts_(std::move(opts)), registry_(registry), watcher_(subs_, c, opts_.retry) {
  if (!broker::valid_name(opts_.tenant))
    throw std::runtime_error("invalid tenant name '" + opts_.tenant + "'");
  publisher_ = std::make_unique<publisher>(conn, invoker, subs_, c,
                                           publisher_options{.tenant = opts_.tenant});
  watcher_.start([p = publisher_.get()](file_event e) { p->push(std::move(e)); });
  // Runs for every function loaded, then for each deploy or removal.
  registry_.subscribe(
      [this](const std::string& key, broker::function_ptr record) { on_change(key, record); });
  logger("fswatch")->info("{} folders subscribed by the functions of tenant {}", subs_.folders().size(),
                          opts_.tenant);
}

adapter::~adapter() {
  registry_.subscribe({});  // no more changes for the watcher
  watcher_.stop();          // no more events for the publisher
  publisher_.reset();
}

void adapter::on_change(const std::string& key, const broker::function_ptr& record) {
  const bool changed =
      record ? subs_.set(key, std::string(proto::view(record->spec().name())),
                         folders_of(record->spec(), opts_.tenant))
             : subs_.remove(key);
  if (changed) watcher_.refresh();
}

}  // namespace fnmesh::fswatch
