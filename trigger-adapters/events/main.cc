// fnmesh-events: turns events on fnmesh.events.<subject> into invocations of every
// function that subscribes to them (see README.md).
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <thread>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "common/log.h"
#include "trigger-adapters/events/dispatcher.h"

namespace {

int serve(const std::string& nats_url, fnmesh::events_adapter::dispatcher_options opts) {
  namespace broker = fnmesh::broker;
  // Signals go to one waiting thread; every other thread (nats.c's included) blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto conn = broker::connection::connect({.urls = nats_url, .name = "fnmesh-events"});
  if (!conn) throw std::runtime_error(conn.error().message());  // names the URL
  auto registry = broker::function_registry::open(**conn);
  if (!registry)
    throw std::runtime_error("cannot read the function registry (KV FNMESH_FUNCTIONS) at " +
                             nats_url + ": " + registry.error().message() +
                             "; is the mesh bootstrapped (fnmesh up)?");
  broker::invoker invoker(**conn, registry->get());
  auto dispatcher =
      fnmesh::events_adapter::dispatcher::open(**conn, **registry, invoker, std::move(opts));
  if (!dispatcher)
    throw std::runtime_error("cannot consume stream FNMESH_EVENTS: " +
                             dispatcher.error().message());

  std::thread waiter([&signals, d = dispatcher->get()] {
    int sig = 0;
    sigwait(&signals, &sig);
    d->stop();
  });
  (*dispatcher)->run();
  waiter.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-events: invokes the functions subscribed to events on fnmesh.events.>"};
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string log_level = "info";
  fnmesh::events_adapter::dispatcher_options opts;
  int ack_wait_s = int(opts.ack_wait.count());
  app.set_config("--config", "", "read options from this TOML/INI file");
  app.add_option("--nats", nats_url, "NATS server URL(s), comma-separated")->capture_default_str();
  app.add_option("--tenant", opts.tenant, "the tenant whose functions this adapter invokes")
      ->capture_default_str();
  app.add_option("--batch", opts.batch, "events fetched at once")->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--ack-wait", ack_wait_s, "seconds before an unacked event is redelivered")
      ->capture_default_str()->check(CLI::Range(1, 3600));
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  opts.ack_wait = std::chrono::seconds(ack_wait_s);

  if (!fnmesh::set_log_level(log_level)) {
    std::fprintf(stderr, "fnmesh-events: unknown log level '%s'\n", log_level.c_str());
    return 2;
  }
  try {
    return serve(nats_url, std::move(opts));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fnmesh-events: %s\n", e.what());
    return 1;
  }
}
