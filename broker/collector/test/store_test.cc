#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "broker/collector/store.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
namespace p = fnmesh::proto;
using fnmesh::collector::grouping;
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
    auto opened = store::open(dir_ / "collector.db", /*synchronous_full=*/false);
    ASSERT_TRUE(opened) << opened.error().message();
    db_.emplace(std::move(*opened));
  }
  fnmesh::test::temp_dir tmp_{"fnmesh-store"};
  const fs::path dir_ = tmp_.path();
  std::optional<store> db_;  // closed before tmp_ is removed
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

  auto got = db_->activation("inv-a");
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
  ASSERT_TRUE(s.has_usage);
  EXPECT_EQ(s.node_seq, 7u);
  EXPECT_EQ(s.billed_ms, 12);
  EXPECT_EQ(s.cpu_user_ns, 5);
  EXPECT_EQ(s.peak_memory_bytes, 4096);
  EXPECT_EQ(s.trigger, p::Trigger::event);
  EXPECT_EQ(s.source, p::AccountingSource::rusage);
  EXPECT_GT(s.recorded_ns, 0);

  auto timeout = db_->activation("inv-b");
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

  auto rows = db_->usage({});
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
  auto missing = db_->activation("no-usage");
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
  auto got = db_->activation("retried");
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].attempt, 1u);
  EXPECT_EQ((*got)[0].status, p::Status::crashed);
  EXPECT_EQ((*got)[0].node_id, "node-a");
  EXPECT_EQ((*got)[1].attempt, 2u);
  EXPECT_EQ((*got)[1].node_id, "node-b");
  // Each attempt is billed once.
  auto rows = db_->usage({.group_by = grouping::node});
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].key, "node-a");
  EXPECT_EQ((*rows)[0].invocations, 1u);
  EXPECT_EQ((*rows)[0].errors, 1u);
  EXPECT_EQ((*rows)[1].invocations, 1u);
  EXPECT_EQ((*rows)[1].errors, 0u);

  auto unknown = db_->activation("never-seen");
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
    long double gb_seconds = 0;
    int64_t peak = 0;
  };
  std::map<std::string, totals> by_function, by_tenant, by_node, acme_by_function,
      window_by_function;
  const int64_t t0 = 1'700'000'000'000'000'000;
  const int64_t window_from = t0 + 1000, window_to = t0 + 3000;

  std::vector<record> all;
  for (int i = 0; i < 3000; ++i) {
    record r;
    r.id = "inv-" + std::to_string(i);
    r.attempt = 1 + uint32_t(rng() % 2);
    r.tenant = pick(tenants);
    r.function = pick(functions);
    r.node = pick(nodes);
    r.status = (rng() % 5 == 0) ? p::Status::error : p::Status::ok;
    r.finished_ns = t0 + int64_t(rng() % 4000);
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
      t.gb_seconds += (long double)r.billed_ms / 1000 * r.memory_limit_bytes / (1ll << 30);
      t.peak = std::max(t.peak, r.peak_memory_bytes);
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
    auto rows = db_->usage(f);
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
      EXPECT_NEAR(row.gb_seconds, double(it->second.gb_seconds),
                  double(it->second.gb_seconds) * 1e-12);
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
  check({.function = "ocr"}, one);
}

TEST_F(store_test, hour_and_day_groupings_use_the_finish_time_in_utc) {
  record a = make("a");
  a.finished_ns = 1'764'201'600'000'000'000;  // 2025-11-27T00:00:00Z
  record b = make("b");
  b.finished_ns = a.finished_ns + 3'600'000'000'000 + 5;  // 01:00:00Z
  ASSERT_TRUE(db_->ingest(batch("n", {{1, a}, {2, b}}).get()));
  auto hours = db_->usage({.group_by = grouping::hour});
  ASSERT_TRUE(hours);
  ASSERT_EQ(hours->size(), 2u);
  EXPECT_EQ((*hours)[0].key, "2025-11-27T00:00Z");
  EXPECT_EQ((*hours)[1].key, "2025-11-27T01:00Z");
  auto days = db_->usage({.group_by = grouping::day});
  ASSERT_TRUE(days);
  ASSERT_EQ(days->size(), 1u);
  EXPECT_EQ((*days)[0].key, "2025-11-27");
  EXPECT_EQ((*days)[0].invocations, 2u);
}

TEST(grouping, names_parse_and_unknown_ones_do_not) {
  using fnmesh::collector::parse_grouping;
  EXPECT_EQ(parse_grouping(""), grouping::function);
  EXPECT_EQ(parse_grouping("tenant"), grouping::tenant);
  EXPECT_EQ(parse_grouping("node"), grouping::node);
  EXPECT_FALSE(parse_grouping("color"));
}

TEST_F(store_test, data_survives_reopening_the_database) {
  ASSERT_TRUE(db_->ingest(batch("n", {{1, make("kept")}}).get()));
  db_.reset();
  auto again = store::open(dir_ / "collector.db");
  ASSERT_TRUE(again);
  auto got = again->activation("kept");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->size(), 1u);
  auto replay = again->ingest(batch("n", {{1, make("kept")}}).get());
  ASSERT_TRUE(replay);
  EXPECT_EQ(replay->duplicates, 1u);
}

TEST_F(store_test, a_file_that_is_not_a_database_is_refused) {
  const auto junk = dir_ / "junk.db";
  std::ofstream(junk) << std::string(4096, 'x');
  auto opened = store::open(junk);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().category(), fnmesh::collector::sqlite_category());
  EXPECT_FALSE(store::open(dir_).has_value());  // a directory
}
