// scale_bench: what adding nodes buys (issue 7), printed as figures; nothing is asserted.
// A real nats-server, the collector and 1, then 2, then 3 fnmesh-node processes; two
// python functions driven closed-loop with twice the mesh's slots in flight (so a backlog
// always waits): a sleep-bound one (a node's ceiling is slots / sleep: near-linear) and a
// CPU-bound one (bounded by the machine's vCPUs, however many nodes). Then how long a node
// started while a backlog waits takes to run its first invocation.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "broker/client/collector_client.h"
#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "broker/client/reply_router.h"
#include "broker/client/topology.h"
#include "common/clock.h"
#include "tests/support/child_process.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fnmesh::test {
namespace {

namespace fs = std::filesystem;
namespace p = proto;
using namespace std::chrono_literals;

struct options {
  double seconds = 10;   // measured per row
  double warmup = 3;     // per row, before measuring (cold starts on a new node)
  int nodes = 3;
  unsigned slots = 4;
  unsigned sleep_ms = 100;
  unsigned cpu_ms = 30;
  double in_flight = 2;  // invocations in flight per slot of the mesh
  int rounds = 3;        // join measurements
};

constexpr const char* sleep_function = "scale-sleep";
constexpr const char* cpu_function = "scale-cpu";

int64_t percentile(const std::vector<int64_t>& sorted, double pct) {
  if (sorted.empty()) return 0;
  const size_t i = size_t(std::ceil(pct / 100.0 * double(sorted.size())));
  return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
}

double ms(int64_t ns) { return double(ns) / 1e6; }

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// The unix time of the log line that contains `needle` (spdlog's local-time stamp,
// "2025-01-31T12:34:56.789 ..."), or nullopt.
std::optional<int64_t> logged_at(const std::string& log, const std::string& needle) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(needle) == line.npos || line.size() < 23) continue;
    std::tm tm{};
    if (!::strptime(line.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) || line[19] != '.') return std::nullopt;
    tm.tm_isdst = -1;
    return int64_t(std::mktime(&tm)) * 1'000'000'000 + std::stoll(line.substr(20, 3)) * 1'000'000;
  }
  return std::nullopt;
}

// The processes of one run and the caller's side of the mesh. Owns them and the temp
// dir; nodes get SIGTERM at the end (they remove their sandboxes' cgroups). One thread.
class mesh {
 public:
  explicit mesh(unsigned slots) : slots_(slots) {
    collector_.emplace(child_process::spawn(
        {.program = bin("fnmesh-collector"),
         .args = {"--listen", collector_endpoint_, "--db", (dir_ / "collector.db").string(), "--http-listen",
                  "127.0.0.1:0"},
         .log = dir_ / "collector.log"}));
    broker::collector_client probe(zmq_, collector_endpoint_);
    bool up = false;
    for (int i = 0; i < 100 && !up; ++i) up = bool(probe.query_activation("0", 100ms));
    if (!up) throw std::runtime_error("the collector did not answer:\n" + collector_->log_text());

    auto conn = broker::connection::connect({.urls = nats_.url(), .name = "scale-bench"});
    if (!conn) throw std::runtime_error(conn.error().message());
    conn_ = std::move(*conn);
    if (auto ok = broker::bootstrap(*conn_); !ok) throw std::runtime_error("bootstrap: " + ok.error().message());
    auto registry = broker::function_registry::open(*conn_);
    if (!registry) throw std::runtime_error("registry: " + registry.error().message());
    registry_ = std::move(*registry);
    auto router = broker::reply_router::bind(zmq_);
    if (!router) throw std::runtime_error("reply router: " + router.error().message());
    router_ = std::move(*router);
    invoker_ = std::make_unique<broker::invoker>(*conn_, registry_.get());
  }

  ~mesh() { stop_nodes(); }

  // Starts fnmesh-node `name` with a state dir of its own; returns at once.
  child_process& spawn_node(const std::string& name) {
    return nodes_
        .insert_or_assign(name, child_process::spawn(
                                    {.program = bin("fnmesh-node"),
                                     .args = {"--nats", nats_.url(), "--collector", collector_endpoint_,
                                              "--dir", (dir_ / name).string(), "--node-id", name,
                                              "--slots", std::to_string(slots_)},
                                     .log = dir_ / (name + ".log")}))
        .first->second;
  }

  void start_node(const std::string& name) {
    auto& node = spawn_node(name);
    if (!node.wait_for_log(" ready: ", 30s)) throw std::runtime_error(name + " not ready:\n" + node.log_text());
  }

  void stop_node(const std::string& name) {
    nodes_.at(name).stop(15s);
    nodes_.erase(name);
  }

  void stop_nodes() {
    for (auto& [name, node] : nodes_)
      if (node.running()) node.stop(15s);
    nodes_.clear();
  }

  // A python3 function whose handler body is `body`, deployed with the CLI.
  void deploy(const std::string& name, unsigned memory_mb, const std::string& body) {
    const auto folder = dir_ / ("fn-" + name);
    fs::create_directories(folder);
    std::ofstream(folder / "fnmesh.yml") << "functions:\n  " << name
                                         << ":\n    runtime: python3\n    handler: handler.handle\n    memory: "
                                         << memory_mb << "\n    timeout: 30\n";
    std::ofstream(folder / "handler.py") << body;
    auto cli = child_process::spawn({.program = bin("fnmesh"),
                                     .args = {"deploy", folder.string(), "--nats", nats_.url(), "--home",
                                              (dir_ / "home").string()},
                                     .log = dir_ / "deploy.log"});
    if (cli.wait(60s).value_or(-1) != 0) throw std::runtime_error("deploy failed:\n" + cli.log_text());
    for (int i = 0; i < 100 && !registry_->find(broker::default_tenant, name); ++i) std::this_thread::sleep_for(50ms);
  }

  broker::invoker& invoker() { return *invoker_; }
  broker::reply_router& router() { return *router_; }

 private:
  unsigned slots_;
  temp_dir dir_{"fnmesh-scale-bench"};
  nats_server nats_;
  zmq::context_t zmq_{1};
  std::string collector_endpoint_ = "tcp://127.0.0.1:" + std::to_string(free_loopback_port());
  std::optional<child_process> collector_;
  std::unique_ptr<broker::connection> conn_;
  std::unique_ptr<broker::function_registry> registry_;
  std::unique_ptr<broker::reply_router> router_;
  std::unique_ptr<broker::invoker> invoker_;
  std::map<std::string, child_process> nodes_;
};

// Keeps a number of sync invocations in flight: each Result that comes back is handed to
// the caller and replaced by a new invocation, until the caller says stop; then waits
// for those still out. Correlation ids count up across runs. One thread.
class closed_loop {
 public:
  // (result, latency from publish to result, now on the monotonic clock) -> keep going?
  using on_result = std::function<bool(const p::Result&, int64_t latency_ns, int64_t now_ns)>;

  explicit closed_loop(mesh& m) : mesh_(m) {}

  void run(const std::string& function, unsigned in_flight, const on_result& handle) {
    req_.function = function;
    req_.payload = {reinterpret_cast<const uint8_t*>(payload_.data()), payload_.size()};
    req_.reply_endpoint = mesh_.router().endpoint();
    req_.source = "scale-bench";
    for (unsigned i = 0; i < in_flight; ++i) publish();
    bool going = true;
    int64_t last = mono_now_ns();
    while (!started_.empty()) {
      auto got = mesh_.router().receive(100ms);
      const int64_t now = mono_now_ns();
      if (!got) {
        if (now - last > 60'000'000'000) throw std::runtime_error("no result for 60 s: the mesh stalled");
        continue;
      }
      last = now;
      const auto it = started_.find(got->get().correlation());
      if (it == started_.end()) continue;  // a duplicate
      const int64_t latency = now - it->second;
      started_.erase(it);
      if (going) going = handle(got->get(), latency, now);
      if (going) publish();
    }
  }

 private:
  void publish() {
    req_.correlation = ++correlation_;
    req_.invocation_id.clear();
    started_[correlation_] = mono_now_ns();
    if (auto ok = mesh_.invoker().invoke(req_, /*async_publish=*/true); !ok)
      throw std::runtime_error("publish: " + ok.error().message());
  }

  mesh& mesh_;
  const std::string payload_ = "{}";
  broker::invocation_request req_;
  uint64_t correlation_ = 0;
  std::unordered_map<uint64_t, int64_t> started_;  // correlation -> publish time
};

struct row {
  std::string kind;
  int nodes = 0;
  unsigned in_flight = 0;
  double ceiling = 0;  // invocations/s the slots (and vCPUs) allow at most
  std::vector<int64_t> latencies_ns;  // ok results inside the window, sorted
  std::map<std::string, uint64_t> by_node;
  uint64_t errors = 0;
  std::string first_error;
  double seconds = 0;

  double rate() const { return double(latencies_ns.size()) / seconds; }
};

// One row: warm-up, then `seconds` measured, under continuous load.
row measure(closed_loop& loop, const options& o, const std::string& kind, const std::string& function, int nodes,
            double ceiling) {
  row r{.kind = kind, .nodes = nodes, .in_flight = unsigned(std::lround(o.in_flight * o.slots * unsigned(nodes))),
        .ceiling = ceiling, .seconds = o.seconds};
  const int64_t begin = mono_now_ns() + int64_t(o.warmup * 1e9);
  const int64_t end = begin + int64_t(o.seconds * 1e9);
  loop.run(function, r.in_flight, [&](const p::Result& res, int64_t latency, int64_t now) {
    if (now < begin) return true;
    if (now >= end) return false;
    if (res.status() == p::Status::ok) {
      r.latencies_ns.push_back(latency);
      ++r.by_node[std::string(p::view(res.node_id()))];
    } else if (r.errors++ == 0) {
      r.first_error = std::string(p::status_name(res.status())) + ": " + std::string(p::view(res.error()));
    }
    return true;
  });
  std::sort(r.latencies_ns.begin(), r.latencies_ns.end());
  return r;
}

void print_row(const row& r, double one_node_rate) {
  std::string per_node;
  for (const auto& [node, n] : r.by_node) per_node += (per_node.empty() ? "" : "/") + std::to_string(n);
  std::printf("%-6s %5d %9u %11zu %8.1f %8.1f %8.1f %8.1f %7.2fx %8.1f  %s\n", r.kind.c_str(), r.nodes, r.in_flight,
              r.latencies_ns.size(), r.rate(), ms(percentile(r.latencies_ns, 50)),
              ms(percentile(r.latencies_ns, 99)), ms(r.latencies_ns.empty() ? 0 : r.latencies_ns.back()),
              one_node_rate > 0 ? r.rate() / one_node_rate : 0.0, r.ceiling, per_node.c_str());
  if (r.errors > 0) std::printf("       %llu errors, the first: %s\n", (unsigned long long)r.errors, r.first_error.c_str());
  std::fflush(stdout);
}

struct join_sample {
  int64_t ready_ns = 0;  // from the process start
  int64_t taken_ns = 0;  // the node handed its first invocation to a sandbox
  int64_t done_ns = 0;   // that invocation finished (cold start included)
  bool cold = false;
};

// Node `name` is started once the one node running has run the sleep function under a
// backlog for two seconds; the first Result from it ends the round.
join_sample measure_join(mesh& m, closed_loop& loop, const options& o, const std::string& name) {
  join_sample s;
  int64_t spawned_unix = 0;
  child_process* node = nullptr;
  const int64_t spawn_at = mono_now_ns() + 2'000'000'000;
  loop.run(sleep_function, unsigned(std::lround(o.in_flight * o.slots)),
           [&](const p::Result& res, int64_t, int64_t now) {
             if (!node && now >= spawn_at) {
               spawned_unix = unix_now_ns();
               node = &m.spawn_node(name);
             }
             if (!node || p::view(res.node_id()) != name) {
               if (node && now - spawn_at > 60'000'000'000)
                 throw std::runtime_error(name + " ran nothing within 60 s:\n" + node->log_text());
               return true;
             }
             s.taken_ns = res.timings()->started_ns() - spawned_unix;
             s.done_ns = res.timings()->finished_ns() - spawned_unix;
             s.cold = res.cold_start();
             return false;
           });
  if (!node->wait_for_log(" ready: ", 30s)) throw std::runtime_error(name + " not ready:\n" + node->log_text());
  const auto ready = logged_at(node->log_text(), "node " + name + " ready: ");
  if (!ready) throw std::runtime_error(name + ": no time stamp on its ready line");
  s.ready_ns = *ready - spawned_unix;
  m.stop_node(name);
  return s;
}

int64_t median(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int run(const options& o) {
  const unsigned vcpus = std::max(1u, std::thread::hardware_concurrency());
  std::printf("scale_bench: nodes of %u slots; %s sleeps %u ms (128 MB); %s spins %u ms of CPU (1769 MB: one vCPU);\n"
              "%g invocations in flight per slot; %g s warm-up + %g s measured per row; %u vCPUs; load %s\n\n",
              o.slots, sleep_function, o.sleep_ms, cpu_function, o.cpu_ms, o.in_flight, o.warmup, o.seconds, vcpus,
              load_average().c_str());
  std::fflush(stdout);
  mesh m(o.slots);
  char body[512];
  std::snprintf(body, sizeof body, "import time\n\ndef handle(event, ctx):\n    time.sleep(%.3f)\n    return 'slept'\n",
                o.sleep_ms / 1000.0);
  m.deploy(sleep_function, 128, body);
  std::snprintf(body, sizeof body,
                "import time\n\ndef handle(event, ctx):\n    t0 = time.process_time()\n    n = 0\n"
                "    while time.process_time() - t0 < %.3f:\n        for _ in range(1000):\n            n += 1\n"
                "    return n\n",
                o.cpu_ms / 1000.0);
  m.deploy(cpu_function, 1769, body);  // a whole vCPU's quota: the loop is bound by the machine, not its cgroup

  closed_loop loop(m);
  std::printf("%-6s %5s %9s %11s %8s %8s %8s %8s %8s %8s  %s\n", "kind", "nodes", "in flight", "invocations",
              "inv/s", "p50 ms", "p99 ms", "max ms", "vs 1", "ceiling", "per node");
  // Each kind on nodes of its own, so that one kind's idle sandboxes do not sit in the
  // other's measurements.
  for (const auto& [kind, function] : {std::pair{"sleep", sleep_function}, std::pair{"cpu", cpu_function}}) {
    double one_node = 0;
    for (int n = 1; n <= o.nodes; ++n) {
      m.start_node(std::string(kind) + "-" + std::to_string(n));
      const double slots = double(o.slots) * n;
      const double ceiling = kind == std::string("sleep") ? slots / (o.sleep_ms / 1000.0)
                                                          : std::min(slots, double(vcpus)) / (o.cpu_ms / 1000.0);
      const row r = measure(loop, o, kind, function, n, ceiling);
      if (n == 1) one_node = r.rate();
      print_row(r, one_node);
    }
    m.stop_nodes();
  }

  m.start_node("base");
  std::printf("\njoin: a new node (empty code cache) started while node base runs %s with a backlog waiting;\n"
              "times from its process start\n%-6s %10s %16s %16s %16s %6s\n",
              sleep_function, "round", "ready ms", "first taken ms", "ready->taken ms", "first done ms", "cold");
  std::vector<int64_t> ready, taken, after_ready, done;
  for (int i = 1; i <= o.rounds; ++i) {
    const auto s = measure_join(m, loop, o, "join-" + std::to_string(i));
    ready.push_back(s.ready_ns);
    taken.push_back(s.taken_ns);
    after_ready.push_back(s.taken_ns - s.ready_ns);
    done.push_back(s.done_ns);
    std::printf("%-6d %10.1f %16.1f %16.1f %16.1f %6s\n", i, ms(s.ready_ns), ms(s.taken_ns), ms(s.taken_ns - s.ready_ns),
                ms(s.done_ns), s.cold ? "yes" : "no");
    std::fflush(stdout);
  }
  std::printf("%-6s %10.1f %16.1f %16.1f %16.1f\n", "median", ms(median(ready)), ms(median(taken)),
              ms(median(after_ready)), ms(median(done)));
  std::printf("\nload %s\n", load_average().c_str());
  return 0;
}

}  // namespace
}  // namespace fnmesh::test

int main(int argc, char** argv) {
  fnmesh::test::options o;
  CLI::App app{"scale_bench: invocations/s and latency with 1..N nodes, and a new node's time to its first invocation"};
  app.add_option("--seconds", o.seconds, "seconds measured per row")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--warmup", o.warmup, "seconds of load before each row is measured")->capture_default_str();
  app.add_option("--nodes", o.nodes, "nodes at most")->check(CLI::Range(1, 16))->capture_default_str();
  app.add_option("--slots", o.slots, "slots per node")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--sleep-ms", o.sleep_ms, "the sleep-bound function's sleep")->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--cpu-ms", o.cpu_ms, "the CPU-bound function's CPU time")->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--in-flight", o.in_flight, "invocations kept in flight per slot of the mesh")
      ->check(CLI::Range(0.25, 16.0))->capture_default_str();
  app.add_option("--rounds", o.rounds, "new-node join measurements")->check(CLI::Range(0, 20))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return fnmesh::test::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scale_bench: %s\n", e.what());
    return 1;
  }
}
