// fnmesh-http: the HTTP trigger adapter (see README.md).
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "trigger-adapters/daemon/daemon.h"
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

}  // namespace

int main(int argc, char** argv) {
  namespace http = fnmesh::http_adapter;
  CLI::App app{"fnmesh-http: invokes functions over HTTP (POST /function/<name>, "
               "POST /async-function/<name>, GET /invocations/<id>); /metrics on the same port"};
  fnmesh::adapter::daemon_options opts{.name = "fnmesh-http"};
  fnmesh::adapter::add_options(app, opts);
  std::string port_file;
  std::string keys_file;
  bool no_auth = false;
  http::server_options server_opts;
  int margin_ms = int(server_opts.wait_margin.count());
  int callback_backoff_ms = int(server_opts.callback_backoff.count());
  int callback_wait_s = int(server_opts.callback_wait.count());
  app.add_option("--listen", server_opts.listen, "host:port to serve HTTP on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--collector", server_opts.collector, "billing collector's ZeroMQ endpoint")
      ->capture_default_str();
  auto* keys = app.add_option("--api-keys", keys_file,
                              "YAML file mapping each tenant to its API keys (Authorization: Bearer <key>)")
                   ->check(CLI::ExistingFile);
  app.add_flag("--no-auth", no_auth, "serve --tenant to every caller without a key")->excludes(keys);
  app.add_option("--wait-margin-ms", margin_ms,
                 "a sync call waits for the function's timeout plus this")
      ->capture_default_str()->check(CLI::Range(0, 600000));
  app.add_option("--callback-retries", server_opts.callback_retries,
                 "retries of a callback POST that fails (back-off doubles each time)")
      ->capture_default_str()->check(CLI::Range(0, 20));
  app.add_option("--callback-backoff-ms", callback_backoff_ms, "wait before the first callback retry")
      ->capture_default_str()->check(CLI::Range(1, 3600000));
  app.add_option("--callback-wait", callback_wait_s,
                 "seconds a callback waits for its invocation's result")
      ->capture_default_str()->check(CLI::Range(1, 7 * 86400));
  app.add_option("--port-file", port_file, "write the bound host:port to this file once listening");

  return fnmesh::adapter::run_main(app, opts, argc, argv, [&] {
    if (keys_file.empty() && !no_auth) {
      std::fprintf(stderr, "fnmesh-http: give --api-keys FILE (each tenant's keys) or --no-auth "
                           "(anyone who reaches the port may invoke tenant %s)\n", opts.tenant.c_str());
      return 2;
    }
    if (!keys_file.empty()) server_opts.keys = std::make_shared<const fnmesh::api_keys>(fnmesh::api_keys::load(keys_file));
    server_opts.tenant = opts.tenant;
    server_opts.wait_margin = std::chrono::milliseconds(margin_ms);
    server_opts.callback_backoff = std::chrono::milliseconds(callback_backoff_ms);
    server_opts.callback_wait = std::chrono::seconds(callback_wait_s);
    raise_open_files_limit();
    fnmesh::adapter::daemon d(opts);
    zmq::context_t zmq(1);
    http::server server(std::move(server_opts), d.registry(), d.invoker(), zmq);
    if (!port_file.empty()) write_port_file(port_file, server.listening());
    d.on_signal([&server] { server.stop(); });
    server.run();
    return 0;
  });
}
