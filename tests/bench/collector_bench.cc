// The billing collector's figures (issue 6, Scale): ingestion records/s through
// store::ingest alone and through the real fnmesh-collector over ZeroMQ, and p50/p99 of
// typical queries over 1,000,000 records, in-process (reader + api::handle) and over
// HTTP to the real binary on a keep-alive connection. A plain summary closes the output.
//
// Files go to $FNMESH_BENCH_DIR (default $TMPDIR/fnmesh-collector-bench). The
// 1,000,000-record database is built there once and reused while it is whole and less
// than a day old (the queries are relative to now).
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "broker/client/collector_client.h"
#include "broker/collector/api.h"
#include "broker/collector/reader.h"
#include "broker/collector/store.h"
#include "common/clock.h"
#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "tests/support/child_process.h"
#include "tests/support/tree.h"

namespace fnmesh::collector {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int64_t ns_per_ms = 1'000'000;
constexpr int64_t ns_per_s = 1'000'000'000;
constexpr int64_t ns_per_day = 86'400 * ns_per_s;
constexpr const char* tenants[] = {"acme", "globex", "initech"};
constexpr int nodes = 3;
constexpr size_t ingest_records = 200'000;  // per ingestion run, each on a fresh database
constexpr int64_t query_records = 1'000'000;
constexpr size_t query_batch = 5000;
constexpr size_t batches_in_flight = 4;
constexpr const char* admin_token = "collector-bench-admin-token";

std::vector<std::string> summary;  // one plain line per benchmark, printed at the end

fs::path bench_dir() {
  const char* dir = std::getenv("FNMESH_BENCH_DIR");
  fs::path p = dir && *dir ? fs::path(dir) : fs::temp_directory_path() / "fnmesh-collector-bench";
  fs::create_directories(p);
  return p;
}

// A fresh directory in the bench dir, removed with its contents at the end.
class scratch {
 public:
  explicit scratch(const std::string& name) : path_(bench_dir() / name) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// A ULID (48-bit ms time, 80 random bits, Crockford base32) made at `ms`.
std::string ulid_at(int64_t ms, std::mt19937_64& rng) {
  static constexpr char digits[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  std::string id(26, '0');
  for (int i = 9; i >= 0; --i, ms >>= 5) id[size_t(i)] = digits[ms & 31];
  for (size_t i = 10; i < 26; ++i) id[i] = digits[rng() & 31];
  return id;
}

// Completions as nodes report them: functions f-<i> (tenant i % 3); `count` records
// whose finished times advance evenly from `from_ns` to `to_ns`, the nodes' streams side
// by side (record k is node k % 3's; a node a batch ahead of the others ends at `to_ns`),
// each up to a minute early (nodes report a little out of order); 94 % ok, 5 % error,
// 1 % timeout; outputs of about 100 bytes.
class completions {
 public:
  completions(int functions, int64_t from_ns, int64_t to_ns, uint64_t count)
      : functions_(functions), from_ns_(from_ns), to_ns_(to_ns),
        step_ns_(double(to_ns - from_ns) / double(count)) {}

  // The next record reported by `node`, with that node's next spool seq.
  std::pair<uint64_t, std::vector<uint8_t>> next(int node) {
    const uint64_t seq = ++seqs_[size_t(node)];
    const double k = double((seq - 1) * nodes + uint64_t(node));
    const int64_t finished =
        std::min(from_ns_ + int64_t(k * step_ns_), to_ns_) - int64_t(rng_() % (60 * ns_per_s));
    const int f = int(rng_() % uint64_t(functions_));
    const uint64_t roll = rng_() % 100;
    const auto status = roll < 94 ? proto::Status::ok
                        : roll < 99 ? proto::Status::error
                                    : proto::Status::timeout;
    const int64_t wall = status == proto::Status::timeout
                             ? 3 * ns_per_s
                             : int64_t(1 + rng_() % 400) * ns_per_ms + int64_t(rng_() % ns_per_ms);
    const int64_t started = finished - wall;
    const int64_t queued = started - int64_t(rng_() % (20 * ns_per_ms));
    const int64_t limit = (int64_t(128) << (f % 4)) << 20;
    const bool cold = rng_() % 50 == 0;
    const std::string id = ulid_at(queued / ns_per_ms, rng_);
    const std::string node_id = "node-" + std::to_string(node);
    const std::string function = "f-" + std::to_string(f);

    std::string output, error;
    if (status == proto::Status::ok)
      output = R"({"request":")" + id + R"(","items":)" + std::to_string(rng_() % 1000) +
               R"(,"etag":"W/)" + std::to_string(rng_()) + R"(","cached":false})";
    else if (status == proto::Status::error)
      error = "ValueError: invalid input at offset " + std::to_string(rng_() % 4096);
    else
      error = "timed out after 3 s";

    b_.Clear();
    const proto::Timings t(queued, started, finished);
    auto result = proto::CreateResult(
        b_, b_.CreateString(id), status,
        b_.CreateVector(reinterpret_cast<const uint8_t*>(output.data()), output.size()),
        b_.CreateString(error), b_.CreateString(node_id), cold, &t, 1, 0,
        b_.CreateString("application/json"));
    const int64_t cpu = wall * int64_t(rng_() % 80) / 100;
    const int64_t peak = limit / 5 + int64_t(rng_() % uint64_t(limit / 2));
    const int64_t billed_ms = (wall + ns_per_ms - 1) / ns_per_ms;
    auto usage = proto::CreateUsage(
        b_, b_.CreateString(id), 1, b_.CreateString(tenants[f % 3]), b_.CreateString(function),
        b_.CreateString(node_id), seq, wall, cpu, cpu / 10, peak, limit,
        int64_t(rng_() % 65536), int64_t(rng_() % 4096), cold, billed_ms,
        proto::AccountingSource::bpf, f % 5 == 4 ? proto::Trigger::cron : proto::Trigger::http);
    b_.Finish(proto::CreateCompletion(b_, result, usage));
    return {seq, {b_.GetBufferPointer(), b_.GetBufferPointer() + b_.GetSize()}};
  }

 private:
  int functions_;
  int64_t from_ns_, to_ns_;
  double step_ns_;
  uint64_t seqs_[nodes] = {};
  std::mt19937_64 rng_{20261127};
  flatbuffers::FlatBufferBuilder b_{1024};
};

// One node's CollectorRequest carrying the next `n` records.
std::vector<uint8_t> batch_request(completions& gen, int node, size_t n, uint64_t request_id) {
  flatbuffers::FlatBufferBuilder b(n * 512);
  std::vector<flatbuffers::Offset<proto::SpooledCompletion>> items;
  for (size_t i = 0; i < n; ++i) {
    auto [seq, bytes] = gen.next(node);
    items.push_back(proto::CreateSpooledCompletion(b, seq, b.CreateVector(bytes)));
  }
  auto batch = proto::CreateCompletionBatch(b, b.CreateString("node-" + std::to_string(node)),
                                            b.CreateVector(items));
  b.Finish(proto::CreateCollectorRequest(b, request_id, proto::RequestBody::CompletionBatch,
                                         batch.Union()));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

const proto::CompletionBatch& batch_of(const std::vector<uint8_t>& request) {
  return *flatbuffers::GetRoot<proto::CollectorRequest>(request.data())->body_as_CompletionBatch();
}

// `ingest_records` records of 10 functions over the last 3 days in batches of `batch`,
// the nodes taking turns; built once per batch size, before any timing.
const std::vector<std::vector<uint8_t>>& ingest_workload(size_t batch) {
  static std::map<size_t, std::vector<std::vector<uint8_t>>> built;
  auto& requests = built[batch];
  if (requests.empty()) {
    const int64_t now = unix_now_ns();
    completions gen(10, now - 3 * ns_per_day, now, ingest_records);
    for (size_t i = 0; i * batch < ingest_records; ++i)
      requests.push_back(batch_request(gen, int(i % nodes), batch, i + 1));
  }
  return requests;
}

std::string with_commas(uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

void note_ingest(benchmark::State& state, const std::string& what, uint64_t records,
                 int64_t elapsed_ns) {
  state.SetItemsProcessed(int64_t(records));
  char line[200];
  std::snprintf(line, sizeof line, "ingest %-58s %10s records/s", what.c_str(),
                with_commas(uint64_t(double(records) * 1e9 / double(elapsed_ns))).c_str());
  summary.push_back(line);
}

// store::ingest alone, one transaction per batch. Arguments: batch size, synchronous
// FULL (1) or NORMAL (0).
void ingest_store(benchmark::State& state) try {
  const auto& requests = ingest_workload(size_t(state.range(0)));
  const bool full = state.range(1) != 0;
  scratch dir("ingest-store");
  auto db = store::open(dir / "collector.db", prices{}, full);
  uint64_t stored = 0;
  int64_t elapsed = 0;
  for (auto _ : state) {
    const int64_t start = mono_now_ns();
    for (const auto& request : requests) {
      auto got = db.ingest(batch_of(request));
      if (!got) {
        state.SkipWithError(("ingest failed: " + got.error().message()).c_str());
        return;
      }
      stored += got->stored;
    }
    elapsed += mono_now_ns() - start;
  }
  if (stored != ingest_records) return state.SkipWithError("not every record was stored");
  note_ingest(state,
              "store::ingest, batch " + std::to_string(state.range(0)) +
                  (full ? ", synchronous full" : ", synchronous normal"),
              stored, elapsed);
} catch (const std::exception& e) {
  state.SkipWithError(e.what());
}

// Waits for a daemon to write `file` (an endpoint); empty when it did not in time.
std::string wait_for_file(fnmesh::test::child_process& process, const fs::path& file,
                          std::chrono::seconds timeout) {
  for (auto until = std::chrono::steady_clock::now() + timeout;
       std::chrono::steady_clock::now() < until && process.running();
       std::this_thread::sleep_for(10ms)) {
    std::string text;
    if (std::ifstream(file) >> text) return text;
  }
  return "";
}

// The real fnmesh-collector, fed by one DEALER as a node feeds it, with up to
// `batches_in_flight` batches awaiting their BatchAck. Arguments: batch size,
// --synchronous full (1) or normal (0).
void ingest_collector(benchmark::State& state) try {
  const auto& requests = ingest_workload(size_t(state.range(0)));
  const bool full = state.range(1) != 0;
  scratch dir("ingest-collector");
  auto process = fnmesh::test::child_process::spawn(
      {.program = fnmesh::test::bin("fnmesh-collector"),
       .args = {"--listen", "tcp://127.0.0.1:0", "--endpoint-file", (dir / "endpoint").string(),
                "--http-listen", "127.0.0.1:0", "--db", (dir / "collector.db").string(),
                "--synchronous", full ? "full" : "normal", "--log-level", "error"},
       .log = dir / "collector.log"});
  const std::string endpoint = wait_for_file(process, dir / "endpoint", 10s);
  if (endpoint.empty()) return state.SkipWithError(("no collector: " + process.log_text()).c_str());
  zmq::context_t ctx(1);
  broker::collector_client client(ctx, endpoint);
  if (!client.query_activation("warm-up", 10s))
    return state.SkipWithError("the collector does not answer");

  uint64_t stored = 0;
  int64_t elapsed = 0;
  for (auto _ : state) {
    const int64_t start = mono_now_ns();
    for (size_t sent = 0, acked = 0; acked < requests.size();) {
      for (; sent < requests.size() && sent - acked < batches_in_flight; ++sent)
        if (!client.send(requests[sent])) return state.SkipWithError("send failed");
      auto reply = client.receive(30s);
      if (!reply) return state.SkipWithError(("no ack: " + reply.error().message()).c_str());
      const auto* ack = reply->get().body_as_BatchAck();
      if (!ack) return state.SkipWithError("a batch was not acked");
      stored += ack->stored();
      ++acked;
    }
    elapsed += mono_now_ns() - start;
  }
  if (process.stop() != 0) return state.SkipWithError(process.log_text().c_str());
  if (stored != ingest_records) return state.SkipWithError("not every record was stored");
  note_ingest(state,
              "fnmesh-collector (ZeroMQ), batch " + std::to_string(state.range(0)) +
                  (full ? ", synchronous full" : ", synchronous normal"),
              stored, elapsed);
} catch (const std::exception& e) {
  state.SkipWithError(e.what());
}

// The 1,000,000-record database the queries read: 20 functions, 30 days up to when it
// was built.
struct query_db {
  fs::path path;
  std::string sample_id;  // an invocation from the middle of the month
};

// Why the database at `path` cannot be reused; empty when it can.
std::string stale(const fs::path& path) {
  if (!fs::exists(path)) return "missing";
  auto db = open_db(path, SQLITE_OPEN_READONLY);
  if (!db) return db.error().message();
  auto version = query_int(db->get(), "PRAGMA user_version");
  if (!version || *version != schema_version) return "another schema version";
  auto records = query_int(db->get(), "SELECT count(*) FROM usage");
  if (!records || *records != query_records) return "incomplete";
  auto newest = query_int(db->get(), "SELECT max(finished_ns) FROM usage");
  if (!newest || *newest < unix_now_ns() - ns_per_day) return "older than a day";
  return "";
}

void build(const fs::path& path) {
  const fs::path building = path.string() + ".building";
  for (const auto& f : {building, fs::path(building.string() + "-wal"),
                        fs::path(building.string() + "-shm")})
    fs::remove(f);
  const int64_t started = mono_now_ns();
  int64_t ingesting = 0;
  {
    auto db = store::open(building, prices{}, false);
    const int64_t now = unix_now_ns();
    completions gen(20, now - 30 * ns_per_day, now, query_records);
    for (uint64_t i = 0; i * query_batch < uint64_t(query_records); ++i) {
      auto request = batch_request(gen, int(i % nodes), query_batch, i + 1);
      const int64_t before = mono_now_ns();
      auto got = db.ingest(batch_of(request));
      ingesting += mono_now_ns() - before;
      if (!got || got->stored != query_batch)
        throw std::runtime_error("building " + building.string() + ": " + db.last_error());
    }
  }  // closed: checkpointed, its WAL gone
  for (const char* suffix : {"-wal", "-shm"}) fs::remove(path.string() + suffix);
  fs::rename(building, path);
  std::fprintf(stderr,
               "built %s: %s records in %.1f s (store::ingest, batches of %zu, synchronous "
               "NORMAL: %.1f s, %s records/s)\n",
               path.c_str(), with_commas(uint64_t(query_records)).c_str(),
               double(mono_now_ns() - started) / 1e9, query_batch, double(ingesting) / 1e9,
               with_commas(uint64_t(double(query_records) * 1e9 / double(ingesting))).c_str());
}

const query_db& million() {
  static const query_db db = [] {
    const fs::path path =
        bench_dir() / ("collector-1m-v" + std::to_string(schema_version) + ".db");
    if (auto why = stale(path); !why.empty()) {
      std::fprintf(stderr, "building %s (%s)\n", path.c_str(), why.c_str());
      build(path);
    } else {
      std::fprintf(stderr, "reusing %s\n", path.c_str());
    }
    auto r = reader::open(path);
    auto mid = r.activations({.until_ns = unix_now_ns() - 15 * ns_per_day, .limit = 1});
    if (!mid || mid->empty()) throw std::runtime_error("no activation in " + path.string());
    return query_db{path, mid->front().invocation_id};
  }();
  return db;
}

// A query's target with "{id}" standing for the sample invocation.
std::string resolve(std::string target) {
  if (auto at = target.find("{id}"); at != std::string::npos)
    target.replace(at, 4, million().sample_id);
  return target;
}

// "/v1/usage?a=1&b=2" -> path and parameters (none of ours needs percent-decoding).
std::pair<std::string, query_params> parse_target(const std::string& target) {
  const auto q = target.find('?');
  query_params params;
  if (q != std::string::npos)
    for (size_t from = q + 1; from < target.size();) {
      size_t end = std::min(target.find('&', from), target.size());
      const auto pair = target.substr(from, end - from);
      const auto eq = pair.find('=');
      params.emplace_back(pair.substr(0, eq), eq == std::string::npos ? "" : pair.substr(eq + 1));
      from = end + 1;
    }
  return {target.substr(0, q), params};
}

// How many rows or activations an answer holds.
size_t rows_in(const std::string& body) {
  const auto j = nlohmann::json::parse(body, nullptr, false);
  for (const char* list : {"rows", "activations", "attempts"})
    if (j.contains(list)) return j[list].size();
  return 0;
}

void note_latencies(benchmark::State& state, const std::string& what, std::vector<double> ms,
                    const std::string& last_body) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[size_t(std::ceil(q * double(ms.size()))) - 1]; };
  const double p50 = at(0.50), p99 = at(0.99);
  const size_t rows = rows_in(last_body);
  state.counters["p50_ms"] = p50;
  state.counters["p99_ms"] = p99;
  state.counters["rows"] = double(rows);
  char line[200];
  std::snprintf(line, sizeof line, "query  %-58s p50 %8.3f ms  p99 %8.3f ms  (rows %zu, runs %zu)",
                what.c_str(), p50, p99, rows, ms.size());
  summary.push_back(line);
}

// One query through reader + api::handle on the calling thread, as an admin. The first
// answer is not timed (it pages the statement's data in).
void query_in_process(benchmark::State& state, const char* name, const char* target) try {
  auto r = reader::open(million().path);
  api queries(r);
  const caller admin{.admin = true};
  const auto [path, params] = parse_target(resolve(target));
  auto answer = queries.handle(admin, path, params);
  std::vector<double> ms;
  for (auto _ : state) {
    const int64_t start = mono_now_ns();
    answer = queries.handle(admin, path, params);
    ms.push_back(double(mono_now_ns() - start) / 1e6);
    if (answer.status != 200) return state.SkipWithError(answer.body.c_str());
  }
  note_latencies(state, std::string(name) + ", api::handle", std::move(ms), answer.body);
} catch (const std::exception& e) {
  state.SkipWithError(e.what());
}

// A keep-alive HTTP/1.1 connection to 127.0.0.1:port for GETs with the admin token.
class http_connection {
 public:
  explicit http_connection(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!fd_ || ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
    int one = 1;
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }

  // The status and body; status 0 when the connection broke.
  std::pair<int, std::string> get(const std::string& target) {
    const std::string request = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                                "Authorization: Bearer " + admin_token + "\r\n\r\n";
    if (::send(fd_.get(), request.data(), request.size(), MSG_NOSIGNAL) != ssize_t(request.size()))
      return {0, ""};
    size_t header_end;
    while ((header_end = in_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return {0, ""};
    std::string header = in_.substr(0, header_end);
    std::transform(header.begin(), header.end(), header.begin(), ::tolower);
    const auto length_at = header.find("\r\ncontent-length:");
    if (header.size() < 12 || length_at == std::string::npos) return {0, ""};
    const size_t length = std::strtoull(header.c_str() + length_at + 17, nullptr, 10);
    const size_t body_at = header_end + 4;
    while (in_.size() < body_at + length)
      if (!fill()) return {0, ""};
    std::pair<int, std::string> reply{std::atoi(header.c_str() + 9), in_.substr(body_at, length)};
    in_.erase(0, body_at + length);
    return reply;
  }

 private:
  bool fill() {
    char buffer[64 * 1024];
    const ssize_t n = ::recv(fd_.get(), buffer, sizeof buffer, 0);
    if (n <= 0) return false;
    in_.append(buffer, size_t(n));
    return true;
  }

  unique_fd fd_;
  std::string in_;  // received, not yet consumed
};

// The real fnmesh-collector serving the 1,000,000-record database, until the bench exits.
// A long retention: nothing in the cached database is cleared.
class served_collector {
 public:
  served_collector() : dir_("query-collector") {
    std::ofstream(dir_ / "tokens.yml") << "admin: [" << admin_token << "]\n";
    process_.emplace(fnmesh::test::child_process::spawn(
        {.program = fnmesh::test::bin("fnmesh-collector"),
         .args = {"--listen", "tcp://127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                  "--http-endpoint-file", (dir_ / "http").string(), "--db",
                  million().path.string(), "--tokens", (dir_ / "tokens.yml").string(),
                  "--retention", "3650d", "--log-level", "error"},
         .log = dir_ / "collector.log"}));
    // Opening checks the whole database first.
    const std::string url = wait_for_file(*process_, dir_ / "http", 120s);
    if (url.empty()) throw std::runtime_error("no collector: " + process_->log_text());
    port_ = std::stoi(url.substr(url.rfind(':') + 1));
  }
  ~served_collector() { process_->stop(); }
  int port() const { return port_; }

 private:
  scratch dir_;
  std::optional<fnmesh::test::child_process> process_;
  int port_ = 0;
};

// One query over HTTP to the real binary, on one keep-alive connection. The first answer
// is not timed.
void query_http(benchmark::State& state, const char* name, const char* target) try {
  static served_collector served;
  const std::string resolved = resolve(target);
  http_connection http(served.port());
  auto answer = http.get(resolved);
  std::vector<double> ms;
  for (auto _ : state) {
    const int64_t start = mono_now_ns();
    answer = http.get(resolved);
    ms.push_back(double(mono_now_ns() - start) / 1e6);
    if (answer.first != 200) {
      const auto why = "HTTP " + std::to_string(answer.first) + " " + answer.second;
      return state.SkipWithError(why.c_str());
    }
  }
  note_latencies(state, std::string(name) + ", HTTP", std::move(ms), answer.second);
} catch (const std::exception& e) {
  state.SkipWithError(e.what());
}

BENCHMARK(ingest_store)
    ->ArgNames({"batch", "sync_full"})
    ->ArgsProduct({{100, 1000}, {1, 0}})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(ingest_collector)
    ->ArgNames({"batch", "sync_full"})
    ->ArgsProduct({{500, 1000}, {1, 0}})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

#define FNMESH_QUERY(name, target, runs)                                                    \
  BENCHMARK_CAPTURE(query_in_process, name, #name, target)                                  \
      ->Iterations(runs)->UseRealTime()->Unit(benchmark::kMillisecond);                     \
  BENCHMARK_CAPTURE(query_http, name, #name, target)                                        \
      ->Iterations(runs)->UseRealTime()->Unit(benchmark::kMillisecond)

FNMESH_QUERY(usage_function_by_day_7d, "/v1/usage?function=f-3&by=day&since=7d", 200);
FNMESH_QUERY(usage_tenant_by_function_30d, "/v1/usage?tenant=acme&by=function&since=30d", 200);
FNMESH_QUERY(activations_function_errors_50, "/v1/activations?function=f-3&status=error&limit=50",
             200);
FNMESH_QUERY(activation_by_id, "/v1/activations/{id}", 200);
// The worst case of the list: a status no record has, so every record is looked at.
FNMESH_QUERY(activations_function_crashed_none,
             "/v1/activations?function=f-3&status=crashed&limit=50", 20);

}  // namespace
}  // namespace fnmesh::collector

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::printf("\ncollector figures (targets: ingestion >= 50,000 records/s; usage by function "
              "and day over 1,000,000 records <= 100 ms)\n");
  for (const auto& line : fnmesh::collector::summary) std::printf("  %s\n", line.c_str());
}
