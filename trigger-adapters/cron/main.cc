// fnmesh-cron: invokes functions on the cron schedules in their specs (see README.md).
#include <CLI/CLI.hpp>

#include "common/log.h"
#include "trigger-adapters/cron/scheduler.h"
#include "trigger-adapters/daemon/daemon.h"

int main(int argc, char** argv) {
  namespace adapter = fnmesh::adapter;
  namespace broker = fnmesh::broker;
  CLI::App app{
      "fnmesh-cron: invokes functions on the cron schedules of their specs (times in UTC)"};
  adapter::daemon_options opts{.name = "fnmesh-cron"};
  adapter::add_options(app, opts);
  adapter::add_metrics_option(app, opts);
  return adapter::run_main(app, opts, argc, argv, [&] {
    // Before the daemon: its registry, /metrics and signal threads use the scheduler until
    // they are gone.
    fnmesh::cron::scheduler scheduler(opts.tenant);
    adapter::daemon d(opts);
    d.registry().subscribe([&scheduler](const std::string& key, broker::function_ptr record) {
      scheduler.update(key, record);
    });
    d.serve_metrics([&scheduler] { return scheduler.metrics(); });
    d.on_signal([&scheduler] { scheduler.stop(); });
    fnmesh::logger("cron")->info("following {} schedules of tenant {}", scheduler.schedules(),
                                 opts.tenant);
    scheduler.run([&](const fnmesh::cron::tick& t) {
      return fnmesh::cron::publish(d.invoker(), opts.tenant, t);
    });
    return 0;
  });
}
