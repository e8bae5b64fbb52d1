// fnmesh-collector: binds the billing collector's ROUTER, stores completions in SQLite,
// answers usage and activation queries. SIGTERM/SIGINT: clean exit 0.
#include <sys/signalfd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "broker/collector/server.h"
#include "broker/collector/store.h"
#include "common/log.h"
#include "common/unique_fd.h"

namespace {

bool write_endpoint_file(const std::filesystem::path& path, const std::string& endpoint) {
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << endpoint << '\n';
    if (!out.flush()) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-collector: the billing collector (ZeroMQ ROUTER, SQLite store)"};
  std::string listen = "tcp://127.0.0.1:7700";
  std::string db_path = "./.fnmesh/collector.db";
  std::string log_level = "info";
  std::string synchronous = "full";
  std::string endpoint_file;
  app.add_option("--listen", listen, "ZeroMQ endpoint to bind; port 0 picks a free one")
      ->capture_default_str();
  app.add_option("--db", db_path, "SQLite database file (created if missing)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")
      ->capture_default_str();
  app.add_option("--synchronous", synchronous,
                 "full: fsync every commit (survives a power cut); normal: survives a crash")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  app.add_option("--endpoint-file", endpoint_file,
                 "write the bound endpoint here once listening (for --listen ...:0)");
  app.set_config("--config", "", "config file (TOML/INI) with the same keys as the flags");
  CLI11_PARSE(app, argc, argv);

  if (!fnmesh::set_log_level(log_level)) {
    std::fprintf(stderr, "fnmesh-collector: unknown log level '%s'\n", log_level.c_str());
    return 2;
  }

  // Block the stop signals in every thread (ZeroMQ's included) and read them from a fd.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  fnmesh::unique_fd stop_fd(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!stop_fd) {
    std::perror("fnmesh-collector: signalfd");
    return 1;
  }

  auto store = fnmesh::collector::store::open(db_path, synchronous == "full");
  if (!store) {
    std::fprintf(stderr, "fnmesh-collector: cannot open database %s: %s\n", db_path.c_str(),
                 store.error().message().c_str());
    return 1;
  }
  zmq::context_t ctx(1);
  auto server = fnmesh::collector::server::bind(ctx, *store, listen);
  if (!server) {
    std::fprintf(stderr, "fnmesh-collector: cannot listen on %s: %s\n", listen.c_str(),
                 server.error().message().c_str());
    return 1;
  }
  auto log = fnmesh::logger("collector");
  if (!endpoint_file.empty() && !write_endpoint_file(endpoint_file, (*server)->endpoint())) {
    std::fprintf(stderr, "fnmesh-collector: cannot write %s\n", endpoint_file.c_str());
    return 1;
  }
  log->info("listening on {}, database {}", (*server)->endpoint(), db_path);

  if (auto ran = (*server)->run(stop_fd.get()); !ran) {
    log->error("stopped: {}", ran.error().message());
    return 1;
  }
  const auto& c = (*server)->counters();
  log->info("stopping: {} requests, {} batches, {} stored, {} duplicates, {} malformed",
            c.requests, c.batches, c.stored, c.duplicates, c.malformed);
  return 0;
}
