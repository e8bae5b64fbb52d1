#include "trigger-adapters/daemon/daemon.h"

#include <pthread.h>

#include <csignal>
#include <cstdio>

#include "common/log.h"

namespace fnmesh::adapter {
namespace {

sigset_t stop_signals() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGINT);
  return s;
}

}  // namespace

void add_options(CLI::App& app, daemon_options& opts) {
  app.set_config("--config", "", "read options from this TOML/INI file");
  app.add_option("--nats", opts.nats, "NATS server URL(s), comma-separated")->capture_default_str();
  app.add_option("--tenant", opts.tenant, "the tenant whose functions this adapter invokes")
      ->capture_default_str();
  app.add_option("--log-level", opts.log_level, "trace|debug|info|warn|error|off")
      ->capture_default_str();
}

void add_metrics_option(CLI::App& app, daemon_options& opts) {
  app.add_option("--metrics-listen", opts.metrics_listen,
                 "host:port for Prometheus /metrics (port 0: any free port, logged at start)")
      ->capture_default_str();
}

daemon::daemon(daemon_options opts) : opts_(std::move(opts)) {
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto conn = broker::connection::connect({.urls = opts_.nats, .name = opts_.name});
  if (!conn) throw std::runtime_error(conn.error().message());  // names the URL
  conn_ = std::move(*conn);
  auto registry = broker::function_registry::open(*conn_);
  if (!registry)
    throw std::runtime_error("cannot read the function registry (KV FNMESH_FUNCTIONS) at " +
                             opts_.nats + ": " + registry.error().message() +
                             "; is the mesh bootstrapped (fnmesh up)?");
  registry_ = std::move(*registry);
  invoker_ = std::make_unique<broker::invoker>(*conn_, registry_.get());
}

daemon::~daemon() {
  closing_ = true;
  if (signal_waiter_.joinable()) {
    pthread_kill(signal_waiter_.native_handle(), SIGTERM);  // wakes its sigwait
    signal_waiter_.join();
  }
  metrics_.reset();
  invoker_.reset();
  registry_.reset();
  if (conn_) (void)conn_->flush();  // async publishes still in flight
}

void daemon::serve_metrics(std::function<std::string()> render) {
  metrics_ = std::make_unique<metrics_endpoint>(opts_.metrics_listen, std::move(render));
  logger(opts_.name)->info("metrics at {}", metrics_->url());
}

void daemon::on_signal(std::function<void()> on_signal) {
  signal_waiter_ = std::thread([this, on_signal = std::move(on_signal)] {
    const sigset_t signals = stop_signals();
    int sig = 0;
    sigwait(&signals, &sig);
    if (closing_) return;
    logger(opts_.name)->info("{}: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    on_signal();
  });
}

int run_main(CLI::App& app, daemon_options& opts, int argc, char** argv,
             const std::function<int()>& serve) {
  CLI11_PARSE(app, argc, argv);
  if (!set_log_level(opts.log_level)) {
    std::fprintf(stderr, "%s: unknown log level '%s'\n", opts.name.c_str(), opts.log_level.c_str());
    return 2;
  }
  try {
    return serve();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", opts.name.c_str(), e.what());
    return 1;
  }
}

}  // namespace fnmesh::adapter
