// fnmesh-http: the HTTP trigger adapter (see README.md).
#include <CLI/CLI.hpp>

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

int serve(const std::string& nats_url, fnmesh::http_adapter::server_options opts,
          const std::string& port_file) {
  namespace broker = fnmesh::broker;
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
  fnmesh::http_adapter::server_options opts;
  int margin_ms = int(opts.wait_margin.count());
  app.set_config("--config", "", "read options from this TOML/INI file");
  app.add_option("--nats", nats_url, "NATS server URL(s), comma-separated")->capture_default_str();
  app.add_option("--listen", opts.listen, "host:port to serve HTTP on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--collector", opts.collector, "billing collector's ZeroMQ endpoint")
      ->capture_default_str();
  app.add_option("--tenant", opts.tenant, "the tenant whose functions this adapter serves")
      ->capture_default_str();
  app.add_option("--wait-margin-ms", margin_ms,
                 "a sync call waits for the function's timeout plus this")
      ->capture_default_str()->check(CLI::Range(0, 600000));
  app.add_option("--port-file", port_file, "write the bound host:port to this file once listening");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  opts.wait_margin = std::chrono::milliseconds(margin_ms);

  if (!fnmesh::set_log_level(log_level)) {
    std::fprintf(stderr, "fnmesh-http: unknown log level '%s'\n", log_level.c_str());
    return 2;
  }
  try {
    return serve(nats_url, std::move(opts), port_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fnmesh-http: %s\n", e.what());
    return 1;
  }
}
