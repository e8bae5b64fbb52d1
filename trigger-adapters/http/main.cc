// fnmesh-http: the HTTP trigger adapter (see README.md).
#include <CLI/CLI.hpp>

#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "common/log.h"
#include "trigger-adapters/http/server.h"

namespace {

// Writes `text` to `path` atomically (for tools that start the adapter on port 0).
void write_port_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

// Every waiting request holds a socket: allow as many as the hard limit does.
void raise_open_files_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

int serve(const std::string& nats_url, fnmesh::http_adapter::server_options opts,
          const std::string& port_file) {
  namespace broker = fnmesh::broker;
  raise_open_files_limit();
  auto conn = broker::connection::connect({.urls = nats_url, .name = "fnmesh-http"});
  if (!conn) throw std::runtime_error(conn.error().message());  // names the URL
  auto registry = broker::function_registry::open(**conn);
  if (!registry)
    throw std::runtime_error("cannot read the function registry (KV FNMESH_FUNCTIONS) at " +
                             nats_url + ": " + registry.error().message() +
                             "; is the mesh bootstrapped (fnmesh up)?");
  broker::invoker invoker(**conn, registry->get());
  zmq::context_t zmq(1);
  fnmesh::http_adapter::server server(std::move(opts), **registry, invoker, zmq);
  if (!port_file.empty()) write_port_file(port_file, server.listening());
  server.run();
  (*conn)->flush();  // async publishes still in flight
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-http: invokes functions over HTTP (POST /function/<name>, "
               "POST /async-function/<name>, GET /invocations/<id>)"};
  std::string nats_url = "nats://127.0.0.1:4222";
  std::string log_level = "info";
  std::string port_file;
  std::string keys_file;
  bool no_auth = false;
  fnmesh::http_adapter::server_options opts;
  int margin_ms = int(opts.wait_margin.count());
  int callback_backoff_ms = int(opts.callback_backoff.count());
  int callback_wait_s = int(opts.callback_wait.count());
  app.set_config("--config", "", "read options from this TOML/INI file");
  app.add_option("--nats", nats_url, "NATS server URL(s), comma-separated")->capture_default_str();
  app.add_option("--listen", opts.listen, "host:port to serve HTTP on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--collector", opts.collector, "billing collector's ZeroMQ endpoint")
      ->capture_default_str();
  auto* keys = app.add_option("--api-keys", keys_file,
                              "YAML file mapping each tenant to its API keys (Authorization: Bearer <key>)")
                   ->check(CLI::ExistingFile);
  app.add_flag("--no-auth", no_auth, "serve --tenant to every caller without a key")->excludes(keys);
  app.add_option("--tenant", opts.tenant, "with --no-auth, the tenant whose functions are served")
      ->capture_default_str();
  app.add_option("--wait-margin-ms", margin_ms,
                 "a sync call waits for the function's timeout plus this")
      ->capture_default_str()->check(CLI::Range(0, 600000));
  app.add_option("--callback-retries", opts.callback_retries,
                 "retries of a callback POST that fails (back-off doubles each time)")
      ->capture_default_str()->check(CLI::Range(0, 20));
  app.add_option("--callback-backoff-ms", callback_backoff_ms, "wait before the first callback retry")
      ->capture_default_str()->check(CLI::Range(1, 3600000));
  app.add_option("--callback-wait", callback_wait_s,
                 "seconds a callback waits for its invocation's result")
      ->capture_default_str()->check(CLI::Range(1, 7 * 86400));
  app.add_option("--port-file", port_file, "write the bound host:port to this file once listening");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  opts.wait_margin = std::chrono::milliseconds(margin_ms);
  opts.callback_backoff = std::chrono::milliseconds(callback_backoff_ms);
  opts.callback_wait = std::chrono::seconds(callback_wait_s);
  if (keys_file.empty() && !no_auth) {
    std::fprintf(stderr, "fnmesh-http: give --api-keys FILE (each tenant's keys) or --no-auth "
                         "(anyone who reaches the port may invoke tenant %s)\n", opts.tenant.c_str());
    return 2;
  }

  if (!fnmesh::set_log_level(log_level)) {
    std::fprintf(stderr, "fnmesh-http: unknown log level '%s'\n", log_level.c_str());
    return 2;
  }
  try {
    if (!keys_file.empty())
      opts.keys = std::make_shared<const fnmesh::http_adapter::api_keys>(
          fnmesh::http_adapter::api_keys::load(keys_file));
    return serve(nats_url, std::move(opts), port_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fnmesh-http: %s\n", e.what());
    return 1;
  }
}
