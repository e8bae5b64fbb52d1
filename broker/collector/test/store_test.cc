#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "broker/collector/reader.h"
#include "broker/collector/store.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
using fnmesh::collector::grouping;
using fnmesh::collector::prices;
using fnmesh::collector::reader;
using fnmesh::collector::store;
using fnmesh::collector::usage_filter;

namespace {

struct record {
  std::string id;
  uint32_t attempt = 1;
  std::string tenant = "default";
  std::string function = "hello";
  std::string node = "node-a";
  p::Status status = p::Status::ok;
  int64_t finished_ns = 1'000'000'000;
  int64_t billed_ms = 1;
  int64_t memory_limit_bytes = 128ll << 20;
  int64_t cpu_user_ns = 0;
  int64_t cpu_system_ns = 0;
  int64_t peak_memory_bytes = 0;
  bool cold_start = false;
  std::string output = "out";
};

std::vector<uint8_t> completion_bytes(const record& r, uint64_t seq) {
  flatbuffers::FlatBufferBuilder b;
  p::Timings t(r.finished_ns - 3000, r.finished_ns - 2000, r.finished_ns);
  auto result = p::CreateResult(
      b, b.CreateString(r.id), r.status,
      b.CreateVector(reinterpret_cast<const uint8_t*>(r.output.data()), r.output.size()),
      b.CreateString(r.status == p::Status::ok ? "" : "boom"), b.CreateString(r.node),
      r.cold_start, &t, r.attempt, 0, b.CreateString("text/plain"));
  auto usage = p::CreateUsage(b, b.CreateString(r.id), r.attempt, b.CreateString(r.tenant),
                              b.CreateString(r.function), b.CreateString(r.node), seq, 2000,
                              r.cpu_user_ns, r.cpu_system_ns, r.peak_memory_bytes,
                              r.memory_limit_bytes, 10, 20, r.cold_start, r.billed_ms,
                              p::AccountingSource::rusage, p::Trigger::event);
  b.Finish(p::CreateCompletion(b, result, usage));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

// A verified CompletionBatch holding `records` with seqs first_seq, first_seq + 1, ...
class batch {
 public:
  batch(const std::string& node, const std::vector<std::pair<uint64_t, record>>& records) {
    flatbuffers::FlatBufferBuilder b;
    std::vector<flatbuffers::Offset<p::SpooledCompletion>> items;
    for (const auto& [seq, r] : records) {
      auto bytes = completion_bytes(r, seq);
      items.push_back(p::CreateSpooledCompletion(b, seq, b.CreateVector(bytes)));
    }
    b.Finish(p::CreateCompletionBatch(b, b.CreateString(node), b.CreateVector(items)));
    buffer_.assign(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  }
  const p::CompletionBatch& get() const {
    const auto* v = p::verified<p::CompletionBatch>(buffer_);
    EXPECT_NE(v, nullptr);
    return *v;
  }

 private:
  std::vector<uint8_t> buffer_;
};

class store_test : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.emplace(store::open(dir_ / "collector.db", prices{}, /*synchronous_full=*/false));
    rd_.emplace(reader::open(dir_ / "collector.db"));
  }
  fnmesh::test::temp_dir tmp_{"fnmesh-store"};
  const fs::path dir_ = tmp_.path();
  std::optional<store> db_;  // both closed before tmp_ is removed
  std::optional<reader> rd_;
};

record make(const std::string& id, uint32_t attempt = 1) {
  record r;
  r.id = id;
  r.attempt = attempt;
  return r;
}

}  // namespace

TEST_F(store_test, a_batch_is_stored_and_acked_up_to_its_highest_seq) {
  record a = make("inv-a");
  a.billed_ms = 12;
  a.cpu_user_ns = 5;
  a.cpu_system_ns = 7;
  a.peak_memory_bytes = 4096;
  a.cold_start = true;
  record b = make("inv-b");
  b.status = p::Status::timeout;
  batch in("node-a", {{7, a}, {9, b}, {8, make("inv-c")}});
  auto out = db_->ingest(in.get());
  ASSERT_TRUE(out) << out.error().message();
  EXPECT_EQ(out->stored, 3u);
  EXPECT_EQ(out->duplicates, 0u);
  EXPECT_EQ(out->last_seq, 9u);

  auto got = rd_->activation("inv-a");
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 1u);
  const auto& s = got->front();
  EXPECT_EQ(s.attempt, 1u);
  EXPECT_EQ(s.tenant, "default");
  EXPECT_EQ(s.function, "hello");
  EXPECT_EQ(s.status, p::Status::ok);
  EXPECT_EQ(std::string(s.output.begin(), s.output.end()), "out");
  EXPECT_EQ(s.content_type, "text/plain");
  EXPECT_EQ(s.node_id, "node-a");
  EXPECT_TRUE(s.cold_start);
  EXPECT_EQ(s.finished_ns, 1'000'000'000);
  EXPECT_EQ(s.node_seq, 7u);
  EXPECT_EQ(s.billed_ms, 12);
  EXPECT_EQ(s.cpu_user_ns, 5);
  EXPECT_EQ(s.peak_memory_bytes, 4096);
  EXPECT_EQ(s.trigger, p::Trigger::event);
  EXPECT_EQ(s.source, p::AccountingSource::rusage);
  EXPECT_GT(s.recorded_ns, 0);

  auto timeout = rd_->activation("inv-b");
  ASSERT_TRUE(timeout);
  ASSERT_EQ(timeout->size(), 1u);
  EXPECT_EQ(timeout->front().status, p::Status::timeout);
  EXPECT_EQ(timeout->front().error, "boom");
}

TEST_F(store_test, replays_are_ignored_and_counted_as_duplicates) {
  batch first("node-a", {{1, make("x")}, {2, make("y")}});
  ASSERT_TRUE(db_->ingest(first.get()));
  auto again = db_->ingest(first.get());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->stored, 0u);
  EXPECT_EQ(again->duplicates, 2u);
  EXPECT_EQ(again->last_seq, 2u);

  batch mixed("node-a", {{2, make("y")}, {3, make("z")}});
  auto m = db_->ingest(mixed.get());
  ASSERT_TRUE(m);
  EXPECT_EQ(m->stored, 1u);
  EXPECT_EQ(m->duplicates, 1u);

  auto rows = rd_->usage({});
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->front().invocations, 3u);
  EXPECT_EQ(rows->front().billed_ms, 3u);
}

TEST_F(store_test, a_completion_without_usage_is_rejected_but_acked) {
  flatbuffers::FlatBufferBuilder cb;
  auto result = p::CreateResult(cb, cb.CreateString("no-usage"));
  cb.Finish(p::CreateCompletion(cb, result));
  std::vector<uint8_t> bare(cb.GetBufferPointer(), cb.GetBufferPointer() + cb.GetSize());

  flatbuffers::FlatBufferBuilder b;
  auto good = completion_bytes(make("good"), 4);
  std::vector<flatbuffers::Offset<p::SpooledCompletion>> items{
      p::CreateSpooledCompletion(b, 4, b.CreateVector(good)),
      p::CreateSpooledCompletion(b, 5, b.CreateVector(bare))};
  b.Finish(p::CreateCompletionBatch(b, b.CreateString("n"), b.CreateVector(items)));
  const auto* v = p::verified<p::CompletionBatch>(std::span(b.GetBufferPointer(), b.GetSize()));
  ASSERT_NE(v, nullptr);
  auto out = db_->ingest(*v);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->stored, 1u);
  EXPECT_EQ(out->rejected, 1u);
  EXPECT_EQ(out->last_seq, 5u);
  auto missing = rd_->activation("no-usage");
  ASSERT_TRUE(missing);
  EXPECT_TRUE(missing->empty());
}

TEST_F(store_test, every_attempt_is_reported_oldest_first) {
  record second = make("retried", 2);
  second.node = "node-b";
  record first = make("retried", 1);
  first.status = p::Status::crashed;
  ASSERT_TRUE(db_->ingest(batch("node-b", {{1, second}}).get()));
  ASSERT_TRUE(db_->ingest(batch("node-a", {{1, first}}).get()));
  auto got = rd_->activation("retried");
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].attempt, 1u);
  EXPECT_EQ((*got)[0].status, p::Status::crashed);
  EXPECT_EQ((*got)[0].node_id, "node-a");
  EXPECT_EQ((*got)[1].attempt, 2u);
  EXPECT_EQ((*got)[1].node_id, "node-b");
  // Each attempt is billed once.
  auto rows = rd_->usage({.group_by = grouping::node});
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].key, "node-a");
  EXPECT_EQ((*rows)[0].invocations, 1u);
  EXPECT_EQ((*rows)[0].errors, 1u);
  EXPECT_EQ((*rows)[1].invocations, 1u);
  EXPECT_EQ((*rows)[1].errors, 0u);

  auto unknown = rd_->activation("never-seen");
  ASSERT_TRUE(unknown);
  EXPECT_TRUE(unknown->empty());
}

TEST_F(store_test, usage_totals_are_exact_sums_of_random_records) {
  std::mt19937_64 rng(20261127);
  const std::vector<std::string> tenants{"acme", "globex", "initech"};
  const std::vector<std::string> functions{"resize", "thumb", "ocr", "echo"};
  const std::vector<std::string> nodes{"n1", "n2", "n3"};
  auto pick = [&](const std::vector<std::string>& v) { return v[rng() % v.size()]; };

  struct totals {
    uint64_t invocations = 0, errors = 0, billed_ms = 0, cpu_ns = 0, cold = 0;
    int64_t memory_mb_ms = 0, peak = 0, cost_lambda = 0, cost_usage = 0;
  };
  std::map<std::string, totals> by_function, by_tenant, by_node, acme_by_function,
      window_by_function;
  // Three days from an hour's start; the window's bounds fall inside hours, so its sums
  // join whole hours (usage_hourly) with records at both edges.
  constexpr int64_t hour = 3'600'000'000'000;
  const int64_t t0 = 1'699'999'200'000'000'000;
  const int64_t window_from = t0 + 5 * hour + 1'234'567, window_to = t0 + 40 * hour + 7;

  std::vector<record> all;
  for (int i = 0; i < 3000; ++i) {
    record r;
    r.id = "inv-" + std::to_string(i);
    r.attempt = 1 + uint32_t(rng() % 2);
    r.tenant = pick(tenants);
    r.function = pick(functions);
    r.node = pick(nodes);
    r.status = (rng() % 5 == 0) ? p::Status::error : p::Status::ok;
    r.finished_ns = t0 + int64_t(rng() % uint64_t(72 * hour));
    r.billed_ms = 1 + int64_t(rng() % 900'000);
    r.memory_limit_bytes = int64_t(128 + rng() % 10113) << 20;
    r.cpu_user_ns = int64_t(rng() % 5'000'000'000ull);
    r.cpu_system_ns = int64_t(rng() % 1'000'000'000ull);
    r.peak_memory_bytes = int64_t(rng() % (1ull << 33));
    r.cold_start = rng() % 3 == 0;
    all.push_back(r);
    auto add = [&](totals& t) {
      ++t.invocations;
      t.errors += r.status != p::Status::ok;
      t.billed_ms += uint64_t(r.billed_ms);
      t.cpu_ns += uint64_t(r.cpu_user_ns + r.cpu_system_ns);
      t.cold += r.cold_start;
      t.memory_mb_ms += (r.memory_limit_bytes >> 20) * r.billed_ms;
      t.peak = std::max(t.peak, r.peak_memory_bytes);
      const auto cost = prices{}.of({.billed_ms = r.billed_ms,
                                     .memory_limit_bytes = r.memory_limit_bytes,
                                     .cpu_ns = r.cpu_user_ns + r.cpu_system_ns,
                                     .peak_memory_bytes = r.peak_memory_bytes,
                                     .wall_ns = 2000,
                                     .network_bytes = 30});
      t.cost_lambda += cost.lambda_pusd;
      t.cost_usage += cost.usage_pusd;
    };
    add(by_function[r.function]);
    add(by_tenant[r.tenant]);
    add(by_node[r.node]);
    if (r.tenant == "acme") add(acme_by_function[r.function]);
    if (r.finished_ns >= window_from && r.finished_ns < window_to)
      add(window_by_function[r.function]);
  }
  // Batches of random sizes, every record sent twice (a replay after a lost ack).
  uint64_t seq = 0, stored = 0, duplicates = 0;
  for (size_t i = 0; i < all.size();) {
    const size_t n = std::min<size_t>(1 + rng() % 200, all.size() - i);
    std::vector<std::pair<uint64_t, record>> items;
    for (size_t k = 0; k < n; ++k) items.emplace_back(++seq, all[i + k]);
    for (int send = 0; send < 2; ++send) {
      auto out = db_->ingest(batch("n", items).get());
      ASSERT_TRUE(out) << out.error().message();
      stored += out->stored;
      duplicates += out->duplicates;
    }
    i += n;
  }
  EXPECT_EQ(stored, all.size());
  EXPECT_EQ(duplicates, all.size());

  auto check = [&](const usage_filter& f, const std::map<std::string, totals>& want) {
    auto rows = rd_->usage(f);
    ASSERT_TRUE(rows) << rows.error().message();
    ASSERT_EQ(rows->size(), want.size());
    auto it = want.begin();
    for (const auto& row : *rows) {
      SCOPED_TRACE(row.key);
      EXPECT_EQ(row.key, it->first);
      EXPECT_EQ(row.invocations, it->second.invocations);
      EXPECT_EQ(row.errors, it->second.errors);
      EXPECT_EQ(row.billed_ms, it->second.billed_ms);
      EXPECT_EQ(row.cpu_ns, it->second.cpu_ns);
      EXPECT_EQ(row.cold_starts, it->second.cold);
      EXPECT_EQ(row.peak_memory_bytes, it->second.peak);
      EXPECT_EQ(row.memory_mb_ms, it->second.memory_mb_ms);
      EXPECT_EQ(row.cost_lambda_pusd, it->second.cost_lambda);
      EXPECT_EQ(row.cost_usage_pusd, it->second.cost_usage);
      EXPECT_EQ(row.network_bytes, int64_t(it->second.invocations) * 30);
      ++it;
    }
  };
  check({.group_by = grouping::function}, by_function);
  check({.group_by = grouping::tenant}, by_tenant);
  check({.group_by = grouping::node}, by_node);
  check({.tenant = "acme", .group_by = grouping::function}, acme_by_function);
  check({.since_ns = window_from, .until_ns = window_to, .group_by = grouping::function},
        window_by_function);
  std::map<std::string, totals> one{{"ocr", by_function["ocr"]}};
  check({.function = "ocr", .group_by = grouping::function}, one);
}

TEST_F(store_test, hour_and_day_groupings_use_the_finish_time_in_utc) {
  record a = make("a");
  a.finished_ns = 1'764'201'600'000'000'000;  // 2025-11-27T00:00:00Z
  record b = make("b");
  b.finished_ns = a.finished_ns + 3'600'000'000'000 + 5;  // 01:00:00Z
  ASSERT_TRUE(db_->ingest(batch("n", {{1, a}, {2, b}}).get()));
  auto hours = rd_->usage({.group_by = grouping::hour});
  ASSERT_TRUE(hours);
  ASSERT_EQ(hours->size(), 2u);
  EXPECT_EQ((*hours)[0].key, "2025-11-27T00:00Z");
  EXPECT_EQ((*hours)[1].key, "2025-11-27T01:00Z");
  auto days = rd_->usage({.group_by = grouping::day});
  ASSERT_TRUE(days);
  ASSERT_EQ(days->size(), 1u);
  EXPECT_EQ((*days)[0].key, "2025-11-27");
  EXPECT_EQ((*days)[0].invocations, 2u);
}

TEST(grouping, names_parse_and_unknown_ones_do_not) {
  using fnmesh::collector::parse_grouping;
  EXPECT_EQ(parse_grouping("function"), grouping::function);
  EXPECT_FALSE(parse_grouping(""));
  EXPECT_EQ(parse_grouping("tenant"), grouping::tenant);
  EXPECT_EQ(parse_grouping("node"), grouping::node);
  EXPECT_FALSE(parse_grouping("color"));
}

TEST_F(store_test, data_survives_reopening_the_database) {
  ASSERT_TRUE(db_->ingest(batch("n", {{1, make("kept")}}).get()));
  rd_.reset();
  db_.reset();
  auto again = store::open(dir_ / "collector.db", prices{});
  auto replay = again.ingest(batch("n", {{1, make("kept")}}).get());
  ASSERT_TRUE(replay);
  EXPECT_EQ(replay->duplicates, 1u);
  auto got = reader::open(dir_ / "collector.db").activation("kept");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->size(), 1u);
}

// The one-line reason a store refuses to open `path`.
std::string refusal(const fs::path& path) {
  try {
    store::open(path, prices{});
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(opened)";
}

TEST_F(store_test, a_file_that_is_not_a_database_is_refused_and_left_alone) {
  const auto junk = dir_ / "junk.db";
  std::ofstream(junk) << std::string(4096, 'x');
  EXPECT_EQ(refusal(junk), "database " + junk.string() +
                               ": not an SQLite database (move it aside or pass another --db)");
  EXPECT_EQ(fs::file_size(junk), 4096u);
  EXPECT_NE(refusal(dir_).find("cannot"), std::string::npos) << refusal(dir_);  // a directory
}

TEST_F(store_test, a_corrupt_database_is_refused_with_the_integrity_check_verdict) {
  std::vector<std::pair<uint64_t, record>> items;
  for (uint64_t i = 1; i <= 2000; ++i) items.emplace_back(i, make("c-" + std::to_string(i)));
  ASSERT_TRUE(db_->ingest(batch("n", items).get()));
  rd_.reset();
  db_.reset();
  const auto path = dir_ / "collector.db";
  // Closing the last connection folded the WAL into the file. Scribble over the page
  // headers in its middle (not the file header).
  const auto size = fs::file_size(path);
  ASSERT_GT(size, 64u * 1024);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    for (uint64_t at = size / 4 / 4096 * 4096; at < size * 3 / 4; at += 4096) {
      f.seekp(std::streamoff(at));
      f << "garbage garbage garbage garbage";
    }
  }
  const auto why = refusal(path);
  EXPECT_TRUE(why.starts_with("database " + path.string() + ": ")) << why;
  EXPECT_TRUE(why.find("corrupt") != std::string::npos ||
              why.find("malformed") != std::string::npos) << why;
}

TEST_F(store_test, expired_outputs_are_cleared_and_usage_stays) {
  record old_one = make("old");
  old_one.finished_ns = 1'000'000'000;
  record fresh = make("fresh");
  fresh.finished_ns = 9'000'000'000;
  ASSERT_TRUE(db_->ingest(batch("n", {{1, old_one}, {2, fresh}}).get()));
  auto cleared = db_->expire_outputs(5'000'000'000);
  ASSERT_TRUE(cleared);
  EXPECT_EQ(*cleared, 1u);
  auto old_got = rd_->activation("old");
  ASSERT_TRUE(old_got);
  ASSERT_EQ(old_got->size(), 1u);
  EXPECT_TRUE(old_got->front().output_expired);
  EXPECT_TRUE(old_got->front().output.empty());
  auto fresh_got = rd_->activation("fresh");
  ASSERT_TRUE(fresh_got);
  EXPECT_FALSE(fresh_got->front().output_expired);
  EXPECT_EQ(std::string(fresh_got->front().output.begin(), fresh_got->front().output.end()), "out");
  // A replayed attempt older than the retention arrives expired.
  record late = make("late");
  late.finished_ns = 2'000'000'000;
  ASSERT_TRUE(db_->ingest(batch("n", {{3, late}}).get()));
  EXPECT_TRUE(rd_->activation("late")->front().output_expired);
  auto rows = rd_->usage({.group_by = grouping::function});
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->front().invocations, 3);
}

TEST_F(store_test, activations_are_listed_newest_first_with_filters) {
  std::vector<std::pair<uint64_t, record>> items;
  for (uint64_t i = 1; i <= 10; ++i) {
    record r = make("list-" + std::to_string(i));
    r.finished_ns = int64_t(i) * 1'000'000'000;
    r.status = i % 3 == 0 ? p::Status::error : p::Status::ok;
    r.function = i % 2 == 0 ? "even" : "odd";
    items.emplace_back(i, r);
  }
  ASSERT_TRUE(db_->ingest(batch("n", items).get()));
  auto ids = [&](const fnmesh::collector::activation_filter& f) {
    std::vector<std::string> out;
    auto got = rd_->activations(f);
    EXPECT_TRUE(got);
    if (got)
      for (const auto& a : *got) {
        EXPECT_TRUE(a.output.empty());
        EXPECT_EQ(a.output_bytes, 3);
        out.push_back(a.invocation_id);
      }
    return out;
  };
  using v = std::vector<std::string>;
  EXPECT_EQ(ids({.limit = 3}), (v{"list-10", "list-9", "list-8"}));
  EXPECT_EQ(ids({.status = "error"}), (v{"list-9", "list-6", "list-3"}));
  EXPECT_EQ(ids({.function = "even", .status = "error"}), (v{"list-6"}));
  EXPECT_EQ(ids({.since_ns = 4'000'000'000, .until_ns = 6'000'000'000}), (v{"list-5", "list-4"}));
  EXPECT_EQ(ids({.tenant = "nobody"}), v{});
}

TEST_F(store_test, windows_at_the_ends_of_time_hold_nothing_and_do_not_wrap) {
  record r = make("now-ish");
  r.finished_ns = 1'764'203'400'000'000'000;  // 2025-11-27T00:30:00Z
  ASSERT_TRUE(db_->ingest(batch("n", {{1, r}}).get()));
  constexpr int64_t max = std::numeric_limits<int64_t>::max();
  constexpr int64_t min = std::numeric_limits<int64_t>::min();
  for (auto [since, until] : {std::pair{max - 1000, max}, {min, min + 1000}, {min + 1, min + 2}}) {
    auto rows = rd_->usage({.since_ns = since, .until_ns = until, .group_by = grouping::function});
    ASSERT_TRUE(rows);
    EXPECT_TRUE(rows->empty()) << since << " .. " << until;
  }
  auto all = rd_->usage({.since_ns = min, .group_by = grouping::function});
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().invocations, 1);
}
