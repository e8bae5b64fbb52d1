// fnmesh-events: turns events on fnmesh.events.<subject> into invocations of every
// function that subscribes to them (see README.md).
#include <CLI/CLI.hpp>

#include "trigger-adapters/daemon/daemon.h"
#include "trigger-adapters/events/dispatcher.h"

int main(int argc, char** argv) {
  namespace adapter = fnmesh::adapter;
  namespace events = fnmesh::events_adapter;
  CLI::App app{"fnmesh-events: invokes the functions subscribed to events on fnmesh.events.>"};
  adapter::daemon_options opts{.name = "fnmesh-events"};
  adapter::add_options(app, opts);
  adapter::add_metrics_option(app, opts);
  events::dispatcher_options dopts;
  int ack_wait_s = int(dopts.ack_wait.count());
  app.add_option("--batch", dopts.batch, "events fetched at once")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--ack-wait", ack_wait_s, "seconds before an unacked event is redelivered")
      ->capture_default_str()->check(CLI::Range(1, 3600));
  return adapter::run_main(app, opts, argc, argv, [&] {
    adapter::daemon d(opts);
    dopts.tenant = opts.tenant;
    dopts.ack_wait = std::chrono::seconds(ack_wait_s);
    auto opened = events::dispatcher::open(d.conn(), d.registry(), d.invoker(), dopts);
    if (!opened)
      throw std::runtime_error("cannot consume stream FNMESH_EVENTS: " + opened.error().message());
    // Shared with /metrics, which the daemon stops only when it goes: a late scrape still
    // finds the dispatcher.
    std::shared_ptr<events::dispatcher> dispatcher = std::move(*opened);
    d.serve_metrics([dispatcher] { return dispatcher->metrics(); });
    d.on_signal([dispatcher] { dispatcher->stop(); });
    dispatcher->run();
    return 0;
  });
}
