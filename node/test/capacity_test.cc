#include "node/capacity.h"

#include <gtest/gtest.h>

#include <map>

using fnmesh::node::capacity;
using fnmesh::node::capacity_function;
using fnmesh::node::pull_kind;

namespace {

// Records every pull request the planner issues, and plays the executor's warm pool.
struct recorder {
  struct request {
    std::string consumer;
    uint32_t batch;
    pull_kind kind;
  };
  std::map<uint64_t, request> issued;
  std::unordered_map<std::string, uint32_t> warm;  // live warm sandboxes per function
  uint64_t next = 1;
  capacity make(uint32_t slots, int64_t memory) {
    return capacity(
        slots, memory,
        [this](const std::string& c, uint32_t batch, pull_kind kind) -> fnmesh::result<uint64_t> {
          issued[next] = {c, batch, kind};
          return next++;
        },
        [this](const std::string& function) {
          auto it = warm.find(function);
          return it == warm.end() ? 0u : it->second;
        });
  }
  const request& last() const { return issued.rbegin()->second; }
  uint64_t last_id() const { return issued.rbegin()->first; }
};

constexpr int64_t mib = 1 << 20;

}  // namespace

TEST(capacity, nothing_is_pulled_without_an_idle_sandbox_or_backlog) {
  recorder rec;
  auto cap = rec.make(4, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}, {"fn_b", "fn_b", 128 * mib, 0}});
  cap.refill(0);
  EXPECT_TRUE(rec.issued.empty());
  EXPECT_EQ(cap.reserved(), 0u);
}

TEST(capacity, each_idle_warm_sandbox_is_one_waiting_request) {
  recorder rec;
  auto cap = rec.make(8, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}});
  rec.warm["fn_a"] = 2;
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 1u);
  EXPECT_EQ(rec.last().kind, pull_kind::warm);
  EXPECT_EQ(rec.last().batch, 2u);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);  // they already wait

  auto held = cap.on_delivery("fn_a", 1);  // one sandbox is busy now
  ASSERT_TRUE(held);
  EXPECT_EQ(cap.running(), 1u);
  EXPECT_EQ(cap.reserved(), 1u);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);  // the other still waits
  cap.on_finished("fn_a", *held);
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 2u);  // idle again: waiting again
  EXPECT_EQ(rec.last().batch, 1u);
  EXPECT_EQ(rec.last().kind, pull_kind::warm);
}

TEST(capacity, backlog_pulls_cold_what_the_free_slots_can_start_and_again_while_it_lasts) {
  recorder rec;
  auto cap = rec.make(4, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}});
  cap.on_backlog("fn_a");
  cap.on_backlog("fn_unknown");  // not deployed here: ignored
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 1u);
  EXPECT_EQ(rec.last().kind, pull_kind::cold);
  EXPECT_EQ(rec.last().batch, 4u);
  cap.on_backlog("fn_a");
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);  // one cold pull at a time

  // It took all it asked for: more may wait, so once slots free up it pulls again.
  std::vector<int64_t> held;
  for (int i = 0; i < 4; ++i) held.push_back(*cap.on_delivery("fn_a", 1));
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);  // no room
  cap.on_finished("fn_a", held.back());
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 2u);
  EXPECT_EQ(rec.last().kind, pull_kind::cold);
  EXPECT_EQ(rec.last().batch, 1u);

  // Nothing came (404): no more pulls until new backlog is known.
  cap.on_request_end(2, 404, 0);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 2u);
}

TEST(capacity, backlog_is_not_pulled_cold_while_a_sandbox_here_waits_for_it) {
  recorder rec;
  auto cap = rec.make(4, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}});
  rec.warm["fn_a"] = 1;
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 1u);  // the idle sandbox waits
  cap.on_backlog("fn_a");            // a doorbell: the work went to a waiting request
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);
  ASSERT_TRUE(cap.on_delivery("fn_a", 1));  // it took one; more may be queued now
  cap.on_backlog("fn_a");
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 2u);
  EXPECT_EQ(rec.last().kind, pull_kind::cold);
}

TEST(capacity, memory_budget_and_function_concurrency_bound_what_is_pulled) {
  recorder rec;
  auto cap = rec.make(16, 512 * mib);
  cap.set_functions({{"fn_big", "fn_big", 256 * mib, 0}});
  cap.on_backlog("fn_big");
  cap.refill(0);
  EXPECT_EQ(rec.last().batch, 2u);  // 2 x 256 MiB fill 512 MiB

  recorder rec2;
  auto limited = rec2.make(16, 4096 * mib);
  limited.set_functions({{"fn_one", "fn_one", 128 * mib, 1}});
  rec2.warm["fn_one"] = 3;
  limited.on_backlog("fn_one");
  limited.refill(0);
  ASSERT_EQ(rec2.issued.size(), 1u);
  EXPECT_EQ(rec2.last().batch, 1u);  // concurrency 1: one request for one invocation
}

TEST(capacity, idle_sandboxes_of_one_function_do_not_starve_another) {
  recorder rec;
  auto cap = rec.make(2, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}, {"fn_b", "fn_b", 128 * mib, 0}});
  rec.warm["fn_a"] = 2;
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 1u);  // both slots wait for fn_a
  const uint64_t warm_a = rec.last_id();
  cap.on_backlog("fn_b");
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 2u);  // fn_b borrows them
  EXPECT_EQ(rec.last().consumer, "fn_b");
  EXPECT_EQ(rec.last().batch, 2u);
  const uint64_t cold_b = rec.last_id();

  auto b1 = cap.on_delivery("fn_b", cold_b);
  auto a1 = cap.on_delivery("fn_a", warm_a);
  ASSERT_TRUE(b1);
  ASSERT_TRUE(a1);
  // Both slots run now: whatever else arrives is handed back to another node.
  EXPECT_FALSE(cap.on_delivery("fn_b", cold_b));
  EXPECT_FALSE(cap.on_delivery("fn_a", warm_a));
  EXPECT_EQ(cap.running(), 2u);
  EXPECT_EQ(cap.reserved(), 0u);
}

TEST(capacity, an_expired_request_frees_its_slots_and_a_missing_consumer_backs_off) {
  recorder rec;
  auto cap = rec.make(4, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}});
  rec.warm["fn_a"] = 1;
  cap.refill(0);
  cap.on_request_end(1, 408, 0);
  EXPECT_EQ(cap.reserved(), 0u);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 2u);  // the idle sandbox waits again
  cap.on_request_end(2, 503, 100);   // no such consumer: wait a second
  cap.refill(500);
  EXPECT_EQ(rec.issued.size(), 2u);
  cap.refill(1200);
  EXPECT_EQ(rec.issued.size(), 3u);
}

TEST(capacity, a_redeploy_with_another_memory_size_releases_exactly_what_was_held) {
  recorder rec;
  auto cap = rec.make(8, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 512 * mib, 0}});
  cap.on_backlog("fn_a");
  cap.refill(0);
  auto held = cap.on_delivery("fn_a", 1);
  ASSERT_TRUE(held);
  cap.on_request_end(1, 404, 0);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}});  // redeployed smaller while it runs
  cap.on_finished("fn_a", *held);
  cap.on_backlog("fn_a");
  cap.refill(0);
  // All 1024 MiB are free again: 8 slots of 128 MiB.
  EXPECT_EQ(rec.last().batch, 8u);
}

TEST(capacity, a_message_whose_request_already_ended_runs_only_if_there_is_room) {
  recorder rec;
  auto cap = rec.make(1, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}});
  rec.warm["fn_a"] = 1;
  cap.refill(0);
  cap.on_request_end(1, 503, 0);  // given up locally
  auto late = cap.on_delivery("fn_a", 0);
  ASSERT_TRUE(late);  // the one slot is free: it runs
  EXPECT_FALSE(cap.on_delivery("fn_a", 0));  // no room for a second
  cap.on_finished("fn_a", *late);
  EXPECT_EQ(cap.running(), 0u);
}

TEST(capacity, after_stop_deliveries_are_handed_back_and_nothing_is_pulled) {
  recorder rec;
  auto cap = rec.make(4, 1024 * mib);
  cap.set_functions({{"fn_a", "fn_a", 128 * mib, 0}});
  rec.warm["fn_a"] = 1;
  cap.refill(0);
  cap.stop();
  EXPECT_FALSE(cap.on_delivery("fn_a", 1));  // another node runs it at once
  EXPECT_FALSE(cap.on_delivery("fn_a", 0));
  EXPECT_EQ(cap.reserved(), 0u);
  cap.on_backlog("fn_a");
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);
  EXPECT_FALSE(cap.on_delivery("fn_unknown", 0));
}
