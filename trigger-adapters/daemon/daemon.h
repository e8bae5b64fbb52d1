#pragma once
// adapter_daemon: what every trigger adapter process shares (DESIGN §10): the common
// flags (--nats, --tenant, --metrics-listen, --log-level, --config), the NATS connection
// (which reconnects by itself), the function registry, the invoker, /metrics, and the
// wait for SIGTERM/SIGINT. Built once in main(); its accessors are thread-safe. Every
// adapter's main() is run_main() around one.
#include <CLI/CLI.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "broker/client/subjects.h"
#include "common/metrics_endpoint.h"

namespace fnmesh::adapter {

struct daemon_options {
  std::string name;  // "fnmesh-cron": the NATS client name and the prefix of error lines
  std::string nats = "nats://127.0.0.1:4222";
  std::string tenant = std::string(broker::default_tenant);
  std::string metrics_listen = "127.0.0.1:0";
  std::string log_level = "info";
};

// Adds the common flags to `app` (which keeps a reference to `opts`): --config, --nats,
// --tenant, --log-level; and --metrics-listen for adapters that serve /metrics apart
// (the http adapter serves it on its own port).
void add_options(CLI::App& app, daemon_options& opts);
void add_metrics_option(CLI::App& app, daemon_options& opts);

class daemon {
 public:
  // Blocks SIGTERM/SIGINT in every thread started after it (nats.c's included), connects
  // and loads the registry. Throws std::runtime_error with one clear line: start-up only.
  explicit daemon(daemon_options opts);
  ~daemon();

  const daemon_options& options() const noexcept { return opts_; }
  broker::connection& conn() noexcept { return *conn_; }
  broker::function_registry& registry() noexcept { return *registry_; }
  broker::invoker& invoker() noexcept { return *invoker_; }

  // Serves /metrics on options().metrics_listen (its URL logged) with what render returns.
  void serve_metrics(std::function<std::string()> render);

  // Runs `on_signal` on a thread of its own when SIGTERM or SIGINT arrives.
  void on_signal(std::function<void()> on_signal);

 private:
  daemon_options opts_;
  std::unique_ptr<broker::connection> conn_;
  std::unique_ptr<broker::function_registry> registry_;
  std::unique_ptr<broker::invoker> invoker_;
  std::unique_ptr<metrics_endpoint> metrics_;
  std::atomic<bool> closing_{false};
  std::thread signal_waiter_;
};

// main()'s body for every adapter: parses, sets the log level, runs `serve` and turns a
// start-up exception into one line on stderr and exit 1 (2 for a bad log level).
int run_main(CLI::App& app, daemon_options& opts, int argc, char** argv,
             const std::function<int()>& serve);

}  // namespace fnmesh::adapter
