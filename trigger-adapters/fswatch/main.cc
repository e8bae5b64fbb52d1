// fnmesh-fswatch: the file-events trigger adapter (see README.md).
#include <future>

#include "trigger-adapters/daemon/daemon.h"
#include "trigger-adapters/fswatch/adapter.h"

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-fswatch: invokes the functions whose folders (triggers.files) get a "
               "new, rewritten or moved-in file"};
  fnmesh::adapter::daemon_options opts{.name = "fnmesh-fswatch"};
  fnmesh::adapter::add_options(app, opts);
  fnmesh::adapter::add_metrics_option(app, opts);
  int retry_ms = 2000;
  app.add_option("--retry-ms", retry_ms, "how often a missing folder is tried again")
      ->capture_default_str()->check(CLI::Range(10, 600000));
  return fnmesh::adapter::run_main(app, opts, argc, argv, [&] {
    // Before the daemon: its /metrics and signal threads use them until ~daemon joins them.
    fnmesh::fswatch::counters counters;
    std::promise<void> stop;
    fnmesh::adapter::daemon d(opts);
    fnmesh::fswatch::adapter a(d.conn(), d.registry(), d.invoker(),
                               {opts.tenant, std::chrono::milliseconds(retry_ms)}, counters);
    d.serve_metrics([&counters] { return fnmesh::fswatch::render_metrics(counters); });
    d.on_signal([&stop] { stop.set_value(); });
    stop.get_future().wait();
    return 0;
  });
}
