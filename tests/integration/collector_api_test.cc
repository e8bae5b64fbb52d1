// The real fnmesh-collector's HTTP query API (/v1/usage, /v1/activations, /metrics) fed
// CompletionBatches over ZeroMQ as nodes feed it. Every figure the API prints is checked
// against sums this file computes itself, with its own implementation of the price
// formulas (broker/collector/README.md "Money"; the /v1 API in its "HTTP API").
#include <gtest/gtest.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "broker/client/collector_client.h"
#include "flatbuffers/proto.h"
#include "tests/support/child_process.h"
#include "tests/support/http_exchange.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tree.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
namespace test = fnmesh::test;
using namespace std::chrono_literals;
using fnmesh::broker::collector_client;
using json = nlohmann::json;
using i128 = __int128;

namespace {

constexpr int64_t ms_ns = 1'000'000, s_ns = 1'000'000'000;
constexpr int64_t hour_ns = 3600 * s_ns, day_ns = 24 * hour_ns;
constexpr int64_t mib = 1 << 20;

const std::string admin_token = "adm-0123456789abcdef-admin";
const std::string acme_token = "acme-0123456789abcdef-key";
const std::string globex_token = "globex-0123456789abcdef-key";

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// One attempt as a node reports it: the Result and the Usage of one Completion.
struct record {
  std::string id;
  uint32_t attempt = 1;
  std::string tenant = "acme", function = "resize", node = "node-a";
  p::Status status = p::Status::ok;
  bool cold_start = false;
  int64_t queued_ns = 0, started_ns = 0, finished_ns = 0;
  int64_t billed_ms = 1;
  int64_t memory_limit_bytes = 128 * mib;
  int64_t cpu_user_ns = 0, cpu_system_ns = 0;
  int64_t peak_memory_bytes = 0;
  int64_t net_rx_bytes = 0, net_tx_bytes = 0;
  std::string output = "ok", error, content_type = "text/plain";
  p::AccountingSource source = p::AccountingSource::cgroup;
  p::Trigger trigger = p::Trigger::http;
  uint64_t seq = 0;  // the node's spool sequence number

  int64_t wall_ns() const { return finished_ns - started_ns; }
  int64_t memory_mb() const { return (memory_limit_bytes + mib - 1) / mib; }
};

// Both models' cost in pico-USD at the default (AWS) prices, rounded to the nearest
// (halves up).
int64_t rounded(i128 num, i128 den) { return int64_t((num + den / 2) / den); }

int64_t lambda_pusd(const record& r) {
  // billed ms / 1000 x MB / 1024 x $0.0000166667 per GB-s, + $0.20 per million requests
  return rounded(i128(r.billed_ms) * r.memory_mb() * 16'666'700, 1000 * 1024) + 200'000;
}

int64_t usage_pusd(const record& r) {
  // CPU s x $0.000011244444 + peak GB x wall s x $0.000001234722 + net GB x $0.09, each
  // part rounded (the collector README's formula), + the request fee
  const i128 gib = i128(1) << 30, giga = 1'000'000'000;
  return rounded(i128(r.cpu_user_ns + r.cpu_system_ns) * 11'244'444, giga) +
         rounded(i128(r.peak_memory_bytes) * r.wall_ns() * 1'234'722, gib * giga) +
         rounded(i128(r.net_rx_bytes + r.net_tx_bytes) * 90'000'000'000, gib) + 200'000;
}

std::string usd(int64_t pusd) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%012lld", (long long)(pusd / 1'000'000'000'000),
                (long long)(pusd % 1'000'000'000'000));
  return buf;
}

// ISO 8601 with milliseconds, in UTC ("...Z") or at an offset east of UTC ("...+01:00").
std::string iso(int64_t ns, int offset_minutes = 0) {
  const int64_t ms = ns / ms_ns;
  const time_t secs = time_t(ms / 1000) + offset_minutes * 60;
  tm t{};
  gmtime_r(&secs, &t);
  char date[32], out[64];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &t);
  if (offset_minutes == 0)
    std::snprintf(out, sizeof out, "%s.%03dZ", date, int(ms % 1000));
  else
    std::snprintf(out, sizeof out, "%s.%03d+%02d:%02d", date, int(ms % 1000),
                  offset_minutes / 60, offset_minutes % 60);
  return out;
}

std::string utc(int64_t ns, const char* format) {
  const time_t secs = time_t(ns / s_ns);
  tm t{};
  gmtime_r(&secs, &t);
  char out[32];
  std::strftime(out, sizeof out, format, &t);
  return out;
}

// Moves an attempt in time, keeping its durations.
void move_to(record& r, int64_t finished_ns) {
  const int64_t by = finished_ns - r.finished_ns;
  r.queued_ns += by;
  r.started_ns += by;
  r.finished_ns += by;
}

std::string key_of(const record& r, const std::string& by) {
  if (by == "function") return r.function;
  if (by == "tenant") return r.tenant;
  if (by == "node") return r.node;
  if (by == "hour") return utc(r.finished_ns, "%Y-%m-%dT%H:00Z");
  return utc(r.finished_ns, "%Y-%m-%d");
}

// ---- encoding, as a node does ----

std::vector<uint8_t> completion_bytes(const record& r) {
  flatbuffers::FlatBufferBuilder b;
  p::Timings t(r.queued_ns, r.started_ns, r.finished_ns);
  auto result = p::CreateResult(
      b, b.CreateString(r.id), r.status,
      b.CreateVector(reinterpret_cast<const uint8_t*>(r.output.data()), r.output.size()),
      b.CreateString(r.error), b.CreateString(r.node), r.cold_start, &t, r.attempt, 0,
      b.CreateString(r.content_type));
  auto usage = p::CreateUsage(
      b, b.CreateString(r.id), r.attempt, b.CreateString(r.tenant), b.CreateString(r.function),
      b.CreateString(r.node), r.seq, r.wall_ns(), r.cpu_user_ns, r.cpu_system_ns,
      r.peak_memory_bytes, r.memory_limit_bytes, r.net_rx_bytes, r.net_tx_bytes, r.cold_start,
      r.billed_ms, r.source, r.trigger);
  b.Finish(p::CreateCompletion(b, result, usage));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

// One node's CompletionBatch: records of that node, seqs increasing.
struct batch {
  std::string node;
  std::vector<record> records;
};

std::vector<uint8_t> batch_request(uint64_t request_id, const batch& batch) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<p::SpooledCompletion>> items;
  for (const auto& r : batch.records)
    items.push_back(p::CreateSpooledCompletion(b, r.seq, b.CreateVector(completion_bytes(r))));
  auto body = p::CreateCompletionBatch(b, b.CreateString(batch.node), b.CreateVector(items));
  b.Finish(p::CreateCollectorRequest(b, request_id, p::RequestBody::CompletionBatch,
                                     body.Union()));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

// Numbers each node's records 1, 2, ... in order and cuts each node's stream into batches
// of 1..max_size records; the nodes' batches interleave.
std::vector<batch> batches_of(std::vector<record>& records, size_t max_size,
                              std::mt19937_64& rng) {
  std::map<std::string, std::vector<record*>> by_node;
  for (auto& r : records) by_node[r.node].push_back(&r);
  std::vector<std::vector<batch>> per_node;
  for (auto& [node, list] : by_node) {
    auto& out = per_node.emplace_back();
    uint64_t seq = 0;
    for (size_t i = 0; i < list.size();) {
      const size_t n = std::min(list.size() - i, 1 + size_t(rng() % max_size));
      auto& b = out.emplace_back(batch{node, {}});
      for (size_t k = 0; k < n; ++k, ++i) {
        list[i]->seq = ++seq;
        b.records.push_back(*list[i]);
      }
    }
  }
  std::vector<batch> out;
  for (size_t i = 0;; ++i) {
    bool any = false;
    for (auto& list : per_node)
      if (i < list.size()) {
        out.push_back(list[i]);
        any = true;
      }
    if (!any) return out;
  }
}

const std::vector<std::string> tenants{"acme", "globex", "initech"};
const std::vector<std::string> functions{"etl", "mail", "ocr", "resize", "thumb"};
const std::vector<std::string> nodes{"node-a", "node-b", "node-c"};

// `n` random attempts finished in [from_ns, from_ns + span_ns).
std::vector<record> random_records(const std::string& prefix, size_t n, int64_t from_ns,
                                   int64_t span_ns, std::mt19937_64& rng) {
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };
  auto below = [&](int64_t n) { return int64_t(rng() % uint64_t(n)); };
  std::vector<record> out;
  for (size_t i = 0; i < n; ++i) {
    record r;
    r.id = prefix + std::to_string(i);
    r.tenant = pick(tenants);
    r.function = pick(functions);
    r.node = pick(nodes);
    r.status = below(5) == 0 ? p::Status(1 + below(7)) : p::Status::ok;
    r.cold_start = below(10) == 0;
    r.billed_ms = 1 + below(below(20) == 0 ? 900'000 : 5'000);
    const int64_t mb = 128 + below(10240 - 128 + 1);
    // A limit that is not whole MB is billed as the next whole MB.
    r.memory_limit_bytes = below(10) == 0 ? mb * mib - 1 - below(mib - 1) : mb * mib;
    r.peak_memory_bytes = 1 + below(r.memory_limit_bytes);
    r.cpu_user_ns = below(2 * s_ns);
    r.cpu_system_ns = below(s_ns / 2);
    r.net_rx_bytes = below(3) == 0 ? 0 : below(10 * mib);
    r.net_tx_bytes = below(3) == 0 ? 0 : below(10 * mib);
    r.finished_ns = from_ns + below(span_ns);
    r.started_ns = r.finished_ns - (r.billed_ms * ms_ns - below(ms_ns));  // billed = ceil(wall)
    r.queued_ns = r.started_ns - below(50 * ms_ns);
    r.output = "out-" + r.id;
    if (r.status != p::Status::ok) r.error = "failed: " + r.id;
    out.push_back(r);
  }
  return out;
}

// ---- the independent sums ----

struct sums {
  uint64_t invocations = 0, errors = 0, cold_starts = 0, billed_ms = 0, memory_mb_ms = 0,
           cpu_ns = 0, network_bytes = 0;
  int64_t peak_memory_bytes = 0, cost_lambda = 0, cost_usage = 0;

  void add(const record& r) {
    ++invocations;
    errors += r.status != p::Status::ok;
    cold_starts += r.cold_start;
    billed_ms += uint64_t(r.billed_ms);
    memory_mb_ms += uint64_t(r.billed_ms * r.memory_mb());
    cpu_ns += uint64_t(r.cpu_user_ns + r.cpu_system_ns);
    network_bytes += uint64_t(r.net_rx_bytes + r.net_tx_bytes);
    peak_memory_bytes = std::max(peak_memory_bytes, r.peak_memory_bytes);
    cost_lambda += lambda_pusd(r);
    cost_usage += usage_pusd(r);
  }

  // What a /v1/usage row must hold (gb_seconds is checked apart: its digits are free).
  json row(const std::string& model) const {
    const int64_t cost = model == "usage" ? cost_usage : cost_lambda;
    return {{"invocations", invocations},     {"errors", errors},
            {"cold_starts", cold_starts},     {"billed_ms", billed_ms},
            {"memory_mb_ms", memory_mb_ms},   {"cpu_ns", cpu_ns},
            {"network_bytes", network_bytes}, {"peak_memory_bytes", peak_memory_bytes},
            {"cost_pusd", cost},              {"cost_usd", usd(cost)}};
  }
};

struct usage_query {
  std::string tenant, function, node;
  std::optional<int64_t> since_ns, until_ns;  // since <= finished < until
  int offset_minutes = 0;                     // how the bounds are written

  bool matches(const record& r) const {
    return (tenant.empty() || r.tenant == tenant) && (function.empty() || r.function == function) &&
           (node.empty() || r.node == node) && (!since_ns || r.finished_ns >= *since_ns) &&
           (!until_ns || r.finished_ns < *until_ns);
  }
};

std::string url_encoded(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || std::string_view("-._~:").find(char(c)) != std::string_view::npos) {
      out += char(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

std::string query_string(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [k, v] : params) out += (out.empty() ? "?" : "&") + k + "=" + url_encoded(v);
  return out;
}

std::string usage_path(const usage_query& q, const std::string& by, const std::string& model) {
  std::vector<std::pair<std::string, std::string>> params{{"by", by}, {"model", model}};
  if (!q.tenant.empty()) params.emplace_back("tenant", q.tenant);
  if (!q.function.empty()) params.emplace_back("function", q.function);
  if (!q.node.empty()) params.emplace_back("node", q.node);
  if (q.since_ns) params.emplace_back("since", iso(*q.since_ns, q.offset_minutes));
  if (q.until_ns) params.emplace_back("until", iso(*q.until_ns, q.offset_minutes));
  return "/v1/usage" + query_string(params);
}

// `got` restricted to the fields of `want` (absent ones as null).
json project(const json& got, const json& want) {
  json out = json::object();
  for (const auto& [k, v] : want.items()) out[k] = got.is_object() && got.contains(k) ? got[k] : json();
  return out;
}

// j[k] when j is an object holding k, else an empty object (a failed check, not a throw).
json member(const json& j, const std::string& k) {
  return j.is_object() && j.contains(k) ? j[k] : json::object();
}

json first_attempt(const json& activation) {
  const json a = member(activation, "attempts");
  return a.is_array() && !a.empty() ? a[0] : json::object();
}

// gb_seconds is memory_mb_ms / 1024 / 1000 as a decimal string, within 1e-9 GB-s.
void expect_gb_seconds(const json& row, uint64_t memory_mb_ms, const std::string& where) {
  const std::string text = row.value("gb_seconds", std::string("<missing>"));
  const auto dot = text.find('.');
  const size_t decimals = text.size() - dot - 1;
  ASSERT_TRUE(dot != std::string::npos && dot > 0 && decimals >= 1 && decimals <= 15 &&
              text.find_first_not_of("0123456789.") == std::string::npos)
      << where << ": gb_seconds " << text;
  i128 scale = 1;
  for (size_t i = 0; i < decimals; ++i) scale *= 10;
  const i128 scaled = i128(std::stoull(text.substr(0, dot))) * scale +  // text x 10^decimals
                      i128(std::stoull(text.substr(dot + 1)));
  // |scaled / scale - mb_ms / 1,024,000| < 1e-9, in integers
  const i128 diff = (scaled * 1'024'000 - i128(memory_mb_ms) * scale) * 1'000'000'000;
  EXPECT_TRUE(diff > -1'024'000 * scale && diff < 1'024'000 * scale)
      << where << ": gb_seconds " << text << " for " << memory_mb_ms << " MB-ms";
}

// ---- the collector process ----

class collector_api : public ::testing::Test {
 protected:
  struct ack {
    uint64_t last_seq = 0;
    uint32_t stored = 0, duplicates = 0;
  };
  struct reply {
    int status = 0;
    std::map<std::string, std::string> headers;
    json body;
  };

  void SetUp() override {
    ASSERT_TRUE(fs::exists(test::bin("fnmesh-collector"))) << test::bin("fnmesh-collector");
    std::ofstream(dir_ / "tokens.yml") << "admin: [" << admin_token << "]\n"
                                       << "acme: [" << acme_token << "]\n"
                                       << "globex: [" << globex_token << "]\n";
  }

  std::vector<std::string> args(const std::vector<std::string>& extra) const {
    std::vector<std::string> a{"--listen", "tcp://127.0.0.1:0",
                               "--endpoint-file", (dir_ / "endpoint").string(),
                               "--http-listen", "127.0.0.1:0",
                               "--http-endpoint-file", (dir_ / "http-endpoint").string(),
                               "--db", db().string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  // Starts (or restarts on the same database) the collector; waits for both endpoints.
  void start(std::vector<std::string> extra = {"--tokens", ""}) {
    for (auto& e : extra)
      if (e.empty()) e = (dir_ / "tokens.yml").string();
    fs::remove(dir_ / "endpoint");
    fs::remove(dir_ / "http-endpoint");
    process_.emplace(test::child_process::spawn(
        {.program = test::bin("fnmesh-collector"),
         .args = args(extra),
         .log = dir_ / ("collector-" + std::to_string(++starts_) + ".log")}));
    for (auto until = std::chrono::steady_clock::now() + 15s;
         std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(10ms)) {
      std::ifstream zin(dir_ / "endpoint"), hin(dir_ / "http-endpoint");
      std::string http;
      if (zin >> endpoint_ && hin >> http) {
        ASSERT_TRUE(http.starts_with("http://127.0.0.1:")) << http;
        http_port_ = std::stoi(http.substr(http.rfind(':') + 1));
        return;
      }
      ASSERT_TRUE(process_->running()) << process_->log_text();
    }
    FAIL() << "the collector did not start: " << process_->log_text();
  }

  void kill_collector() {
    ASSERT_TRUE(process_->signal(SIGKILL));
    ASSERT_TRUE(process_->wait(5s));
  }

  fs::path db() const { return dir_ / "collector.db"; }

  // Sends one batch and waits for its BatchAck.
  ack send(collector_client& c, uint64_t request_id, const batch& b) {
    const auto request = batch_request(request_id, b);
    bool sent = false;  // nothing is queued for an absent peer: retry until connected
    for (auto until = std::chrono::steady_clock::now() + 10s;
         !sent && std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(5ms))
      sent = bool(c.send(request));
    EXPECT_TRUE(sent);
    for (;;) {
      auto r = c.receive(20s);
      if (!r) {
        ADD_FAILURE() << "no BatchAck: " << r.error().message() << "\n" << process_->log_text();
        return {};
      }
      if (r->get().request_id() != request_id) continue;
      const auto* a = r->get().body_as_BatchAck();
      if (!a) {
        ADD_FAILURE() << "not a BatchAck for request " << request_id;
        return {};
      }
      return {a->last_seq(), a->stored(), a->duplicates()};
    }
  }

  void ingest(const std::vector<batch>& batches) {
    collector_client c(ctx_, endpoint_);
    for (size_t i = 0; i < batches.size(); ++i) {
      const auto a = send(c, i + 1, batches[i]);
      ASSERT_EQ(a.stored, batches[i].records.size()) << "batch " << i;
      ASSERT_EQ(a.duplicates, 0u);
      ASSERT_EQ(a.last_seq, batches[i].records.back().seq);
    }
  }

  reply get(const std::string& path, const std::string& token = admin_token) {
    const std::string auth = token.empty() ? "" : "Authorization: Bearer " + token + "\r\n";
    auto r = test::http_call(http_port_, "GET", path, {}, true, auth);
    reply out{r.status, r.headers, json()};
    out.body = json::parse(r.body, nullptr, false);
    EXPECT_FALSE(out.body.is_discarded()) << path << ": not JSON: " << r.body;
    return out;
  }

  // Every row and the total of one /v1/usage answer against the independent sums.
  void expect_usage(const std::vector<record>& records, const usage_query& q,
                    const std::string& by, const std::string& model,
                    const std::string& token = admin_token) {
    const std::string path = usage_path(q, by, model);
    SCOPED_TRACE(path);
    std::map<std::string, sums> want;
    sums total;
    for (const auto& r : records)
      if (q.matches(r)) {
        want[key_of(r, by)].add(r);
        total.add(r);
      }
    auto got = get(path, token);
    ASSERT_EQ(got.status, 200) << got.body.dump();
    EXPECT_EQ(got.body.value("by", ""), by);
    EXPECT_EQ(got.body.value("model", ""), model);
    EXPECT_EQ(got.body.value("since", json()), q.since_ns ? json(iso(*q.since_ns)) : json());
    EXPECT_EQ(got.body.value("until", json()), q.until_ns ? json(iso(*q.until_ns)) : json());
    const json rows = got.body.value("rows", json::array());
    ASSERT_EQ(rows.size(), want.size()) << got.body.dump();
    size_t i = 0;
    for (const auto& [key, s] : want) {  // rows ordered by key
      const json& row = rows[i++];
      json expected = s.row(model);
      expected["key"] = key;
      ASSERT_EQ(project(row, expected).dump(), expected.dump()) << "row " << i - 1;
      expect_gb_seconds(row, s.memory_mb_ms, "row " + key);
    }
    const json t = member(got.body, "total");
    EXPECT_EQ(project(t, total.row(model)).dump(), total.row(model).dump());
    expect_gb_seconds(t, total.memory_mb_ms, "total");
  }

  void expect_every_grouping(const std::vector<record>& records, const usage_query& q = {}) {
    for (const std::string by : {"function", "tenant", "node", "hour", "day"})
      for (const std::string model : {"lambda", "usage"}) {
        expect_usage(records, q, by, model);
        if (HasFatalFailure()) return;
      }
  }

  test::temp_dir dir_{"collector-api"};
  std::optional<test::child_process> process_;
  int starts_ = 0;
  std::string endpoint_;
  int http_port_ = 0;
  zmq::context_t ctx_{1};
};

// 10,000 attempts over three days, three tenants, five functions, three nodes.
std::vector<record> ten_thousand(int64_t from_ns) {
  std::mt19937_64 rng(20261127);
  return random_records("inv-", 10'000, from_ns, 3 * day_ns, rng);
}

}  // namespace

TEST_F(collector_api, every_grouping_and_filter_equals_an_independent_sum) {
  start();
  // Three days ending an hour ago, starting mid-hour so that hours and days are partial.
  const int64_t from = (now_ns() - 3 * day_ns - hour_ns) / hour_ns * hour_ns + 37 * 60 * s_ns;
  auto records = ten_thousand(from);
  // Bounds that are not hour-aligned, with records exactly on them (since is inclusive,
  // until exclusive).
  const int64_t since = from + 5 * hour_ns + 17 * 60 * s_ns + 3250 * ms_ns;
  const int64_t until = from + 2 * day_ns + 3 * hour_ns + 41 * 60 * s_ns + 59'999 * ms_ns;
  move_to(records[10], since);
  move_to(records[11], until);
  move_to(records[12], until - 1);
  std::mt19937_64 rng(1);
  ingest(batches_of(records, 600, rng));
  if (HasFatalFailure()) return;

  expect_every_grouping(records);
  for (const usage_query& q : std::vector<usage_query>{
           {.tenant = "acme"},
           {.function = "ocr"},
           {.node = "node-b"},
           {.tenant = "globex", .function = "mail"},
           {.since_ns = since},
           {.until_ns = until},
           {.since_ns = since, .until_ns = until},
           {.tenant = "initech", .node = "node-c", .since_ns = since, .until_ns = until},
           {.since_ns = since, .until_ns = until, .offset_minutes = 60},  // +01:00
           {.tenant = "nobody"},
       }) {
    expect_every_grouping(records, q);
    if (HasFatalFailure()) return;
  }
  // The defaults are by=function, model=lambda.
  auto defaults = get("/v1/usage");
  auto explicit_ = get("/v1/usage?by=function&model=lambda");
  EXPECT_EQ(defaults.body, explicit_.body);
  EXPECT_EQ(process_->stop(), 0) << process_->log_text();
}

TEST_F(collector_api, replayed_batches_are_duplicates_and_change_nothing) {
  start();
  auto records = ten_thousand(now_ns() - 3 * day_ns);
  std::mt19937_64 rng(2);
  const auto batches = batches_of(records, 600, rng);
  ingest(batches);
  if (HasFatalFailure()) return;
  std::vector<json> before;
  for (const std::string by : {"function", "tenant", "node", "hour", "day"})
    for (const std::string model : {"lambda", "usage"})
      before.push_back(get("/v1/usage?by=" + by + "&model=" + model).body);

  collector_client c(ctx_, endpoint_);
  for (size_t i = 0; i < batches.size(); ++i) {
    const auto a = send(c, 1000 + i, batches[i]);
    EXPECT_EQ(a.stored, 0u) << "batch " << i;
    EXPECT_EQ(a.duplicates, batches[i].records.size()) << "batch " << i;
    EXPECT_EQ(a.last_seq, batches[i].records.back().seq);
  }
  size_t k = 0;
  for (const std::string by : {"function", "tenant", "node", "hour", "day"})
    for (const std::string model : {"lambda", "usage"})
      EXPECT_EQ(get("/v1/usage?by=" + by + "&model=" + model).body, before[k++]) << by << model;
  expect_every_grouping(records);
}

TEST_F(collector_api, sigkill_mid_ingestion_loses_nothing_and_counts_nothing_twice) {
  start();
  auto records = ten_thousand(now_ns() - 3 * day_ns);
  std::mt19937_64 rng(3);
  const auto batches = batches_of(records, 100, rng);

  // A node's reporter: up to four batches in flight, a batch is done only once acked.
  std::mutex m;
  std::set<size_t> acked;
  std::atomic<bool> killed = false;
  collector_client reporter(ctx_, endpoint_);
  const auto first = send(reporter, 1, batches[0]);
  ASSERT_EQ(first.stored, batches[0].records.size());
  acked.insert(0);
  std::thread sender([&] {
    std::map<uint64_t, size_t> in_flight;  // request id -> batch
    size_t next = 1;
    for (;;) {
      while (next < batches.size() && in_flight.size() < 4 &&
             reporter.send(batch_request(next + 1, batches[next]))) {
        in_flight[next + 1] = next;
        ++next;
      }
      if (in_flight.empty() && next == batches.size()) return;
      auto r = reporter.receive(100ms);
      if (!r && killed) return;
      if (!r) continue;
      auto it = in_flight.find(r->get().request_id());
      if (it == in_flight.end() || !r->get().body_as_BatchAck()) continue;
      std::lock_guard lock(m);
      acked.insert(it->second);
      in_flight.erase(it);
    }
  });
  const bool enough = [&] {
    for (auto until = std::chrono::steady_clock::now() + 60s;
         std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(1ms)) {
      std::lock_guard lock(m);
      if (acked.size() >= batches.size() / 3) return true;
    }
    return false;
  }();
  kill_collector();
  killed = true;
  sender.join();
  ASSERT_TRUE(enough) << process_->log_text();
  ASSERT_LT(acked.size(), batches.size()) << "the stream ended before the kill";

  start();
  collector_client node(ctx_, endpoint_);
  size_t resent = 0, acked_resent = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    const bool was_acked = acked.contains(i);
    if (was_acked && i % 3 != 0) continue;
    const auto a = send(node, 5000 + i, batches[i]);
    EXPECT_EQ(a.stored + a.duplicates, batches[i].records.size()) << "batch " << i;
    EXPECT_EQ(a.last_seq, batches[i].records.back().seq);
    if (was_acked) {
      EXPECT_EQ(a.stored, 0u) << "acked batch " << i << " was not stored";
      ++acked_resent;
    }
    ++resent;
  }
  std::printf("acked before the kill: %zu of %zu batches; resent %zu (%zu of them acked)\n",
              acked.size(), batches.size(), resent, acked_resent);
  expect_every_grouping(records);
  EXPECT_EQ(process_->stop(), 0) << process_->log_text();
}

TEST_F(collector_api, a_tenant_sees_only_its_own_records_and_no_token_is_401) {
  start();
  std::mt19937_64 rng(4);
  auto records = random_records("t-", 300, now_ns() - day_ns, day_ns, rng);
  ingest(batches_of(records, 50, rng));
  if (HasFatalFailure()) return;
  std::vector<record> acme, globex;
  std::copy_if(records.begin(), records.end(), std::back_inserter(acme),
               [](const record& r) { return r.tenant == "acme"; });
  std::copy_if(records.begin(), records.end(), std::back_inserter(globex),
               [](const record& r) { return r.tenant == "globex"; });
  ASSERT_FALSE(acme.empty());
  ASSERT_FALSE(globex.empty());

  // A tenant's token filters to its own tenant whatever it asks for.
  for (const std::string by : {"function", "tenant", "node", "hour", "day"}) {
    expect_usage(acme, {}, by, "lambda", acme_token);
    expect_usage(globex, {}, by, "usage", globex_token);
  }
  expect_usage(acme, {.function = "ocr"}, "node", "usage", acme_token);
  auto other = get("/v1/usage?tenant=globex&by=tenant", acme_token);
  EXPECT_EQ(other.status, 200);
  EXPECT_EQ(other.body.value("rows", json()), json::array()) << other.body.dump();
  EXPECT_EQ(member(other.body, "total").value("invocations", -1), 0) << other.body.dump();
  // The admin sees every tenant.
  expect_usage(records, {}, "tenant", "lambda", admin_token);
  expect_usage(records, {.tenant = "globex"}, "function", "usage", admin_token);

  auto listed = [&](const std::string& path, const std::string& token) {
    std::multiset<std::string> out;
    auto r = get(path, token);
    EXPECT_EQ(r.status, 200) << r.body.dump();
    for (const auto& a : r.body.value("activations", json::array()))
      out.insert(a.value("tenant", "") + "/" + a.value("invocation_id", ""));
    return out;
  };
  auto ids = [](const std::vector<record>& v) {
    std::multiset<std::string> out;
    for (const auto& r : v) out.insert(r.tenant + "/" + r.id);
    return out;
  };
  EXPECT_EQ(listed("/v1/activations?limit=1000", acme_token), ids(acme));
  EXPECT_EQ(listed("/v1/activations?limit=1000&tenant=globex", acme_token), std::multiset<std::string>{});
  EXPECT_EQ(listed("/v1/activations?limit=1000", admin_token), ids(records));
  EXPECT_EQ(listed("/v1/activations?limit=1000&tenant=globex", admin_token), ids(globex));

  // Another tenant's invocation does not exist for you.
  const std::string theirs = globex.front().id;
  auto hidden = get("/v1/activations/" + theirs, acme_token);
  EXPECT_EQ(hidden.status, 404);
  EXPECT_EQ(hidden.body.value("error", ""), "no activation " + theirs);
  auto own = get("/v1/activations/" + theirs, globex_token);
  EXPECT_EQ(own.status, 200) << own.body.dump();
  EXPECT_EQ(own.body.value("tenant", ""), "globex");
  EXPECT_EQ(get("/v1/activations/" + theirs, admin_token).status, 200);
  auto unknown = get("/v1/activations/no-such-id", admin_token);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.body.value("error", ""), "no activation no-such-id");

  // No token, an unknown one, or another scheme: 401 with a challenge, on every path.
  const std::vector<std::string> paths{"/v1/usage", "/v1/activations", "/v1/activations/" + theirs};
  for (const auto& path : paths)
    for (const std::string& token : {std::string(), std::string("not-a-valid-token-0123456789")}) {
      auto r = get(path, token);
      EXPECT_EQ(r.status, 401) << path << " " << token;
      EXPECT_EQ(r.headers["www-authenticate"], "Bearer realm=\"fnmesh\"") << path;
      EXPECT_TRUE(r.body.contains("error")) << r.body.dump();
    }
  auto basic = test::http_call(http_port_, "GET", "/v1/usage", {}, true,
                               "Authorization: Basic YWRtaW46YWRtaW4=\r\n");
  EXPECT_EQ(basic.status, 401);
  // /metrics needs no token.
  auto metrics = test::http_call(http_port_, "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("# TYPE"), std::string::npos) << metrics.body;
}

TEST_F(collector_api, without_a_tokens_file_every_query_is_401) {
  start({});
  for (const std::string path : {"/v1/usage", "/v1/activations", "/v1/activations/x"})
    for (const std::string& token : {std::string(), admin_token}) {
      auto r = get(path, token);
      EXPECT_EQ(r.status, 401) << path;
      EXPECT_EQ(r.headers["www-authenticate"], "Bearer realm=\"fnmesh\"") << path;
    }
  EXPECT_EQ(test::http_call(http_port_, "GET", "/metrics").status, 200);
}

TEST_F(collector_api, bad_parameters_are_400_with_the_reason_and_change_nothing) {
  start();
  std::mt19937_64 rng(5);
  auto records = random_records("b-", 200, now_ns() - day_ns, day_ns, rng);
  ingest(batches_of(records, 50, rng));
  if (HasFatalFailure()) return;
  const json before = get("/v1/usage?by=tenant").body;

  struct bad {
    std::string path, reason;  // the error names the reason
  };
  for (const auto& [path, reason] : std::vector<bad>{
           {"/v1/usage?colour=red",
            "unknown parameter 'colour' (tenant, function, node, since, until, by, group_by, model)"},
           {"/v1/usage?since=yesterday", "'yesterday' is not a time"},
           {"/v1/usage?until=2026-02-30", "'2026-02-30' is not a date"},
           {"/v1/usage?since=7x", "'7x'"},
           {"/v1/usage?by=colour", "'colour'"},
           {"/v1/usage?model=gold", "'gold'"},
           {"/v1/activations?status=fine", "'fine'"},
           {"/v1/activations?limit=0", "limit"},
           {"/v1/activations?limit=100000", "limit"},
           {"/v1/activations?limit=ten", "limit"},
           {"/v1/activations?since=soon", "'soon' is not a time"},
           {"/v1/activations?node=node-a", "unknown parameter 'node'"},
       }) {
    auto r = get(path);
    EXPECT_EQ(r.status, 400) << path << ": " << r.body.dump();
    const std::string error = r.body.value("error", "");
    EXPECT_NE(error.find(reason), std::string::npos) << path << ": " << error;
  }
  auto missing = get("/v1/nothing-here");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(missing.body.contains("error"));
  auto post = test::http_call(http_port_, "POST", "/v1/usage", "{}", true,
                              "Authorization: Bearer " + admin_token + "\r\n");
  EXPECT_EQ(post.status, 405) << post.body;
  EXPECT_EQ(get("/v1/usage?by=tenant").body, before);
  expect_every_grouping(records);
}

// issue6-api.md and DESIGN §7 (`/v1/usage?...&group_by=...`) name it so.
TEST_F(collector_api, group_by_is_another_name_for_by) {
  start();
  std::mt19937_64 rng(10);
  auto records = random_records("g-", 100, now_ns() - day_ns, day_ns, rng);
  ingest(batches_of(records, 50, rng));
  if (HasFatalFailure()) return;
  auto alias = get("/v1/usage?group_by=node&model=usage");
  EXPECT_EQ(alias.status, 200) << alias.body.dump();
  EXPECT_EQ(alias.body, get("/v1/usage?by=node&model=usage").body);
  auto bad = get("/v1/usage?group_by=week");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.value("error", "").find("'week'"), std::string::npos) << bad.body.dump();
}

TEST_F(collector_api, activations_are_newest_first_and_a_retried_invocation_shows_every_attempt) {
  start();
  const int64_t t0 = now_ns() - hour_ns;
  std::mt19937_64 rng(6);
  auto records = random_records("a-", 80, t0, 30 * 60 * s_ns, rng);
  // One invocation tried three times: timed out, crashed, then ok, on three nodes.
  const std::string flaky = "01JFLAKY0000000000000000AA";
  const std::vector<std::tuple<p::Status, std::string, std::string, std::string>> tries{
      {p::Status::timeout, "node-a", "", "timed out after 3 s"},
      {p::Status::crashed, "node-b", std::string("\xff\xfe\x00\x01", 4), "exit code 139"},
      {p::Status::ok, "node-c", "done \xe2\x9c\x93", ""}};
  for (uint32_t i = 0; i < tries.size(); ++i) {
    record r = records[i];
    r.id = flaky;
    r.attempt = i + 1;
    r.tenant = "acme";
    r.function = "flaky";
    std::tie(r.status, r.node, r.output, r.error) = tries[i];
    r.content_type = i == 1 ? "application/octet-stream" : "text/plain; charset=utf-8";
    r.cold_start = i == 0;
    r.finished_ns = t0 + 40 * 60 * s_ns + i * s_ns;
    r.started_ns = r.finished_ns - 1'234'567'000;
    r.queued_ns = r.started_ns - 7 * ms_ns;
    r.billed_ms = 1235;
    records.push_back(r);
  }
  ingest(batches_of(records, 20, rng));
  if (HasFatalFailure()) return;

  auto newest_first = records;
  std::stable_sort(newest_first.begin(), newest_first.end(),
                   [](const record& a, const record& b) { return a.finished_ns > b.finished_ns; });
  auto listed = [&](const std::string& path) {
    std::vector<std::string> out;
    auto r = get(path);
    EXPECT_EQ(r.status, 200) << path << ": " << r.body.dump();
    for (const auto& a : r.body.value("activations", json::array()))
      out.push_back(a.value("invocation_id", "") + "#" + std::to_string(a.value("attempt", 0)));
    return out;
  };
  auto expected = [&](auto keep, size_t limit) {
    std::vector<std::string> out;
    for (const auto& r : newest_first)
      if (keep(r) && out.size() < limit) out.push_back(r.id + "#" + std::to_string(r.attempt));
    return out;
  };
  auto all = [](const record&) { return true; };
  EXPECT_EQ(listed("/v1/activations"), expected(all, 50));  // default limit 50
  EXPECT_EQ(listed("/v1/activations?limit=3"), expected(all, 3));
  EXPECT_EQ(listed("/v1/activations?limit=1000"), expected(all, 1000));
  EXPECT_EQ(listed("/v1/activations?status=error&limit=1000"),
            expected([](const record& r) { return r.status == p::Status::error; }, 1000));
  EXPECT_EQ(listed("/v1/activations?status=crashed&function=flaky"),
            std::vector<std::string>{flaky + "#2"});
  EXPECT_EQ(listed("/v1/activations?function=ocr&tenant=globex&limit=1000"),
            expected([](const record& r) { return r.function == "ocr" && r.tenant == "globex"; },
                     1000));
  const int64_t mid = t0 + 15 * 60 * s_ns;
  EXPECT_EQ(listed("/v1/activations?limit=1000&since=" + url_encoded(iso(mid))),
            expected([&](const record& r) { return r.finished_ns >= mid; }, 1000));
  EXPECT_EQ(listed("/v1/activations?limit=1000&until=" + url_encoded(iso(mid))),
            expected([&](const record& r) { return r.finished_ns < mid; }, 1000));

  // One list entry in full: the newest is the third attempt.
  const record& last = records.back();
  auto page = get("/v1/activations?limit=1");
  ASSERT_EQ(page.body.value("activations", json::array()).size(), 1u) << page.body.dump();
  const json entry = page.body["activations"][0];
  const json want_entry{{"invocation_id", flaky},
                        {"attempt", 3},
                        {"tenant", "acme"},
                        {"function", "flaky"},
                        {"status", "ok"},
                        {"node", "node-c"},
                        {"cold_start", false},
                        {"trigger", "http"},
                        {"queued", iso(last.queued_ns)},
                        {"started", iso(last.started_ns)},
                        {"finished", iso(last.finished_ns)},
                        {"billed_ms", 1235},
                        {"memory_mb", last.memory_mb()},
                        {"output_bytes", last.output.size()},
                        {"output_expired", false},
                        {"cost_lambda_pusd", lambda_pusd(last)},
                        {"cost_usage_pusd", usage_pusd(last)}};
  EXPECT_EQ(project(entry, want_entry).dump(), want_entry.dump());
  EXPECT_NEAR(entry.value("duration_ms", -1.0), 1234.567, 1e-9) << entry.dump();

  // The invocation: every attempt, oldest first, each billed.
  auto inv = get("/v1/activations/" + flaky);
  ASSERT_EQ(inv.status, 200) << inv.body.dump();
  EXPECT_EQ(inv.body.value("invocation_id", ""), flaky);
  EXPECT_EQ(inv.body.value("tenant", ""), "acme");
  EXPECT_EQ(inv.body.value("function", ""), "flaky");
  const json attempts = inv.body.value("attempts", json::array());
  ASSERT_EQ(attempts.size(), 3u) << inv.body.dump();
  sums flaky_sums;
  for (uint32_t i = 0; i < 3; ++i) {
    const record& r = records[records.size() - 3 + i];
    flaky_sums.add(r);
    json want{{"attempt", i + 1},
              {"status", p::EnumNameStatus(r.status)},
              {"node", r.node},
              {"cold_start", r.cold_start},
              {"queued", iso(r.queued_ns)},
              {"started", iso(r.started_ns)},
              {"finished", iso(r.finished_ns)},
              {"error", r.error},
              {"content_type", r.content_type},
              {"output_expired", false},
              {"usage",
               {{"wall_ns", r.wall_ns()},
                {"cpu_user_ns", r.cpu_user_ns},
                {"cpu_system_ns", r.cpu_system_ns},
                {"peak_memory_bytes", r.peak_memory_bytes},
                {"memory_limit_bytes", r.memory_limit_bytes},
                {"net_rx_bytes", r.net_rx_bytes},
                {"net_tx_bytes", r.net_tx_bytes},
                {"billed_ms", r.billed_ms},
                {"source", "cgroup"},
                {"trigger", "http"}}},
              {"cost_lambda_pusd", lambda_pusd(r)},
              {"cost_usd_lambda", usd(lambda_pusd(r))},
              {"cost_usage_pusd", usage_pusd(r)},
              {"cost_usd_usage", usd(usage_pusd(r))}};
    if (i == 1)
      want["output_base64"] = "//4AAQ==";
    else
      want["output"] = r.output;
    EXPECT_EQ(project(attempts[i], want).dump(), want.dump());
  }
  EXPECT_FALSE(attempts[1].contains("output")) << attempts[1].dump();
  EXPECT_FALSE(attempts[2].contains("output_base64")) << attempts[2].dump();
  // Billed once per attempt.
  expect_usage(records, {.function = "flaky"}, "function", "lambda");
  expect_usage(records, {.function = "flaky"}, "node", "usage");
  auto billed = get("/v1/usage?function=flaky");
  const json total = member(billed.body, "total");
  EXPECT_EQ(total.value("invocations", 0), 3);
  EXPECT_EQ(total.value("errors", 0), 2);
  EXPECT_EQ(total.value("cost_pusd", int64_t(0)), flaky_sums.cost_lambda);
}

// ---- the database at start ----

class collector_start : public collector_api {
 protected:
  // A real database with a few thousand records, closed cleanly.
  void make_database() {
    start();
    std::mt19937_64 rng(7);
    auto records = random_records("c-", 3000, now_ns() - day_ns, day_ns, rng);
    ingest(batches_of(records, 500, rng));
    if (HasFatalFailure()) return;
    ASSERT_EQ(process_->stop(), 0) << process_->log_text();
  }

  static std::string read(const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }

  // The collector must refuse the database: exit 1, one line naming the file, untouched.
  void expect_refused() {
    fs::remove(dir_ / "endpoint");
    const std::string bytes = read(db());
    auto p = test::child_process::spawn({.program = test::bin("fnmesh-collector"),
                                         .args = args({"--tokens", (dir_ / "tokens.yml").string()}),
                                         .log = dir_ / "refused.log"});
    const auto code = p.wait(30s);
    ASSERT_TRUE(code) << "still running with a corrupt database";
    EXPECT_EQ(*code, 1);
    const std::string log = p.log_text();
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
    EXPECT_NE(log.find(db().string()), std::string::npos) << log;
    EXPECT_TRUE(read(db()) == bytes) << "the database file was changed";
    EXPECT_FALSE(fs::exists(dir_ / "endpoint"));
  }
};

TEST_F(collector_start, a_database_with_garbage_in_its_pages_is_refused) {
  make_database();
  if (HasFatalFailure()) return;
  // Closed cleanly: everything is in the main file, no WAL to read pages from.
  const fs::path wal = db().string() + "-wal";
  ASSERT_TRUE(!fs::exists(wal) || fs::file_size(wal) == 0) << wal << " was left behind";
  const auto size = fs::file_size(db());
  ASSERT_GT(size, 16u * 4096) << "too small to corrupt its middle";
  std::mt19937_64 rng(8);
  std::string garbage(3 * 4096, '\0');
  for (auto& c : garbage) c = char(rng());
  {
    std::fstream f(db(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(size / 2 / 4096 * 4096));
    f.write(garbage.data(), std::streamsize(garbage.size()));
  }
  expect_refused();
}

TEST_F(collector_start, a_file_that_is_not_sqlite_is_refused) {
  {
    std::ofstream f(db(), std::ios::binary);
    for (int i = 0; i < 500; ++i) f << "these are my notes, not a database " << i << "\n";
  }
  expect_refused();
}

TEST_F(collector_api, old_outputs_expire_after_the_retention_while_usage_stays) {
  start({"--tokens", "", "--retention", "1h"});
  std::mt19937_64 rng(9);
  auto old = random_records("old-", 200, now_ns() - 3 * day_ns, day_ns, rng);
  auto recent = random_records("new-", 50, now_ns() - 60 * s_ns, 30 * s_ns, rng);
  auto records = old;
  records.insert(records.end(), recent.begin(), recent.end());
  ingest(batches_of(records, 40, rng));
  if (HasFatalFailure()) return;
  const json before = get("/v1/usage?by=day&model=usage").body;

  // The collector sweeps once a second (README "Durability and retention").
  const std::string old_id = old.front().id, new_id = recent.front().id;
  auto expired = [&] {
    auto r = get("/v1/activations/" + old_id);
    return r.status == 200 && first_attempt(r.body).value("output_expired", false);
  };
  for (auto until = std::chrono::steady_clock::now() + 10s;
       !expired() && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(200ms);
  for (const auto& r : old) {
    auto a = get("/v1/activations/" + r.id);
    ASSERT_EQ(a.status, 200);
    const json attempt = first_attempt(a.body);
    EXPECT_TRUE(attempt.value("output_expired", false)) << attempt.dump();
    EXPECT_EQ(attempt.value("output", "") + attempt.value("output_base64", ""), "")
        << attempt.dump();
    EXPECT_EQ(attempt.value("status", ""), p::EnumNameStatus(r.status));
    EXPECT_EQ(member(attempt, "usage").value("billed_ms", int64_t(-1)), r.billed_ms);
    if (HasFailure()) break;
  }
  auto fresh = get("/v1/activations/" + new_id);
  ASSERT_EQ(fresh.status, 200);
  EXPECT_FALSE(first_attempt(fresh.body).value("output_expired", true)) << fresh.body.dump();
  EXPECT_EQ(first_attempt(fresh.body).value("output", ""), recent.front().output);
  for (const auto& a : get("/v1/activations?limit=1000").body.value("activations", json::array()))
    EXPECT_EQ(a.value("output_expired", false), a.value("invocation_id", "").starts_with("old-"))
        << a.dump();

  EXPECT_EQ(get("/v1/usage?by=day&model=usage").body, before);
  expect_every_grouping(records);
}

// ---- outside clients: Python's zmq and curl ----

TEST_F(collector_api, python_zmq_and_curl_speak_the_documented_protocols) {
  const fs::path python = "/usr/bin/python3";  // Debian's, with python3-zmq and -flatbuffers
  const fs::path generated = test::build_dir() / "python";  // flatc --python (flatbuffers/)
  if (!fs::exists(python) || test::find_program("curl").empty() ||
      !fs::exists(generated / "fnmesh" / "proto" / "CollectorRequest.py"))
    GTEST_FAIL() << "needs " << python << " with python3-zmq and python3-flatbuffers, curl, and "
                 << generated << " (built by flatbuffers/CMakeLists.txt): run tools/setup.sh";
  start();
  auto script = test::child_process::spawn(
      {.program = python,
       .args = {(test::source_dir() / "tests/integration/collector_python_test.py").string(),
                "--zmq", endpoint_, "--http", "http://127.0.0.1:" + std::to_string(http_port_),
                "--token", acme_token, "--generated", generated.string()},
       .log = dir_ / "python.log"});
  const auto code = script.wait(120s);
  EXPECT_EQ(code, 0) << script.log_text() << "\ncollector:\n" << process_->log_text();
  EXPECT_TRUE(process_->running());
  EXPECT_EQ(process_->stop(), 0) << process_->log_text();
}
