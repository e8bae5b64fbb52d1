// fnmesh-collector: binds the billing collector's ROUTER (completions from the nodes) and
// its HTTP query API, stores completions in SQLite. SIGTERM/SIGINT: clean exit 0.
#include <sys/signalfd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>

#include "broker/collector/api.h"
#include "broker/collector/http_api.h"
#include "broker/collector/prices.h"
#include "broker/collector/query_time.h"
#include "broker/collector/reader.h"
#include "broker/collector/server.h"
#include "broker/collector/store.h"
#include "common/api_keys.h"
#include "common/log.h"
#include "common/metrics_endpoint.h"
#include "common/unique_fd.h"

namespace {

namespace collector = fnmesh::collector;

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

// "30d", "12h", "90s": how long outputs are kept.
std::chrono::nanoseconds parse_retention(const std::string& text) {
  // A relative query time is "that long before now": before 0, it is minus the length.
  auto before_zero = collector::parse_query_time(text, 0);
  if (!before_zero || *before_zero >= 0)
    throw std::runtime_error("--retention: '" + text + "' is not a duration like 90s, 12h, 30d");
  return std::chrono::nanoseconds(-*before_zero);
}

// `http` is null until the HTTP API is constructed (a scrape may come first).
std::string render_metrics(const collector::server_counters& c, const collector::http_api* http) {
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    fnmesh::append_metric(out, name, "counter", help, v);
  };
  counter("fnmesh_collector_requests_total", "ZeroMQ requests answered", c.requests);
  counter("fnmesh_collector_batches_total", "completion batches committed", c.batches);
  counter("fnmesh_collector_records_stored_total", "completions new to the store", c.stored);
  counter("fnmesh_collector_records_duplicate_total", "replayed completions ignored",
          c.duplicates);
  counter("fnmesh_collector_records_rejected_total",
          "completions without an id, result or usage", c.rejected);
  counter("fnmesh_collector_malformed_total",
          "ZeroMQ messages dropped: oversized, wrong frame count or failed verification",
          c.malformed);
  counter("fnmesh_collector_errors_total", "ZeroMQ requests answered with an error", c.errors);
  counter("fnmesh_collector_outputs_expired_total", "activation outputs cleared by retention",
          c.expired);
  counter("fnmesh_collector_http_requests_total", "HTTP requests answered",
          http ? http->requests() : 0);
  counter("fnmesh_collector_http_unauthorized_total", "HTTP queries refused for their token",
          http ? http->unauthorized() : 0);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-collector: the billing collector (ZeroMQ ROUTER, SQLite store, HTTP API)"};
  std::string listen = "tcp://127.0.0.1:7700";
  std::string http_listen = "127.0.0.1:7701";
  std::string db_path = "./.fnmesh/collector.db";
  std::string log_level = "info";
  std::string synchronous = "full";
  std::string endpoint_file, http_endpoint_file, tokens_file, prices_file;
  std::string retention = "30d";
  app.add_option("--listen", listen, "ZeroMQ endpoint to bind; port 0 picks a free one")
      ->capture_default_str();
  app.add_option("--http-listen", http_listen,
                 "HOST:PORT of the HTTP query API and /metrics; port 0 picks a free one")
      ->capture_default_str();
  app.add_option("--db", db_path, "SQLite database file (created if missing)")
      ->capture_default_str();
  app.add_option("--tokens", tokens_file,
                 "YAML: tenant -> [query tokens]; the entry `admin` sees every tenant. "
                 "Without it every query is refused (401)");
  app.add_option("--prices", prices_file,
                 "YAML price file (lambda: gb_second, request; usage: cpu_second, "
                 "memory_gb_second, network_gb, request); default: AWS public prices");
  app.add_option("--retention", retention,
                 "keep activation outputs this long (90s, 12h, 30d); usage records stay")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")
      ->capture_default_str();
  app.add_option("--synchronous", synchronous,
                 "full: fsync every commit (survives a power cut); normal: survives a crash")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  app.add_option("--endpoint-file", endpoint_file,
                 "write the bound ZeroMQ endpoint here once listening (for --listen ...:0)");
  app.add_option("--http-endpoint-file", http_endpoint_file,
                 "write the HTTP API's URL here once listening (for --http-listen ...:0)");
  app.set_config("--config", "", "config file (TOML/INI) with the same keys as the flags");
  CLI11_PARSE(app, argc, argv);

  if (!fnmesh::set_log_level(log_level)) {
    std::fprintf(stderr, "fnmesh-collector: unknown log level '%s'\n", log_level.c_str());
    return 2;
  }

  // Block the stop signals in every thread (ZeroMQ's and HTTP's included); read them
  // from a fd.
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

  auto log = fnmesh::logger("collector");
  try {
    const auto price_list =
        prices_file.empty() ? collector::prices{} : collector::prices::load(prices_file);
    const auto keep = parse_retention(retention);
    std::optional<fnmesh::api_keys> tokens;
    if (!tokens_file.empty()) tokens = fnmesh::api_keys::load(tokens_file);
    else log->warn("no --tokens: every HTTP query is refused (401)");

    auto store = collector::store::open(db_path, price_list, synchronous == "full");
    auto ingest_reader = collector::reader::open(db_path);
    auto query_reader = collector::reader::open(db_path);
    zmq::context_t ctx(1);
    auto server = collector::server::bind(ctx, store, ingest_reader, listen, keep);
    if (!server) {
      std::fprintf(stderr, "fnmesh-collector: cannot listen on %s: %s\n", listen.c_str(),
                   server.error().message().c_str());
      return 1;
    }
    collector::api queries(query_reader);
    std::atomic<const collector::http_api*> http_seen = nullptr;
    auto http = std::make_unique<collector::http_api>(
        http_listen,
        [&queries](const collector::caller& who, std::string_view path,
                   const collector::query_params& params) {
          return queries.handle(who, path, params);
        },
        tokens ? &*tokens : nullptr,
        [&] { return render_metrics((*server)->counters(), http_seen.load()); });
    http_seen = http.get();
    for (auto [file, value] : {std::pair{&endpoint_file, (*server)->endpoint()},
                               {&http_endpoint_file, http->endpoint()}})
      if (!file->empty() && !write_endpoint_file(*file, value)) {
        std::fprintf(stderr, "fnmesh-collector: cannot write %s\n", file->c_str());
        return 1;
      }
    log->info("listening on {} and {}, database {}", (*server)->endpoint(), http->endpoint(), db_path);

    if (auto ran = (*server)->run(stop_fd.get()); !ran) {
      log->error("stopped: {}", ran.error().message());
      return 1;
    }
    const auto& c = (*server)->counters();
    log->info("stopping: {} requests, {} batches, {} stored, {} duplicates, {} malformed",
              c.requests.load(), c.batches.load(), c.stored.load(), c.duplicates.load(),
              c.malformed.load());
    return 0;
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "fnmesh-collector: %s\n", e.what());
    return 1;
  }
}
