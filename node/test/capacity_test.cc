#include "node/capacity.h"

#include <gtest/gtest.h>

#include <map>

using fnmesh::node::capacity;
using fnmesh::node::capacity_function;

namespace {

// Records every pull request the planner issues.
struct recorder {
  struct request {
    std::string consumer;
    uint32_t batch;
  };
  std::map<uint64_t, request> issued;
  uint64_t next = 1;
  capacity::issue_fn fn() {
    return [this](const std::string& c, uint32_t batch, bool) -> fnmesh::result<uint64_t> {
      issued[next] = {c, batch};
      return next++;
    };
  }
  uint64_t last_id() const { return issued.rbegin()->first; }
};

constexpr int64_t mib = 1 << 20;

}  // namespace

TEST(capacity, every_function_gets_one_waiting_request_within_the_slots) {
  recorder rec;
  capacity cap(2, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 128 * mib, 0}, {"fn_b", 128 * mib, 0}, {"fn_c", 128 * mib, 0}});
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 2u);  // only two slots: never more reserved than that
  EXPECT_EQ(cap.reserved(), 2u);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 2u);  // nothing new while they wait
}

TEST(capacity, a_delivery_turns_a_reservation_into_a_running_slot) {
  recorder rec;
  capacity cap(4, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 128 * mib, 0}});
  cap.refill(0);
  ASSERT_EQ(rec.issued.size(), 1u);
  auto held = cap.on_delivery("fn_a", 1);  // batch of 1 fully served: fn_a is hungry
  ASSERT_TRUE(held);
  EXPECT_EQ(*held, 128 * mib);
  EXPECT_EQ(cap.running(), 1u);
  EXPECT_EQ(cap.reserved(), 0u);
  cap.refill(0);
  // One waiting request plus the remaining slots shared by the hungry function.
  EXPECT_EQ(cap.running() + cap.reserved(), 4u);
  cap.on_finished("fn_a", *held);
  EXPECT_EQ(cap.running(), 0u);
}

TEST(capacity, memory_budget_and_function_concurrency_bound_what_is_pulled) {
  recorder rec;
  capacity cap(16, 512 * mib, rec.fn());
  cap.set_functions({{"fn_big", 256 * mib, 0}});
  cap.refill(0);
  ASSERT_TRUE(cap.on_delivery("fn_big", 1));
  cap.refill(0);
  EXPECT_EQ(cap.running() + cap.reserved(), 2u);  // 2 x 256 MiB fill 512 MiB

  recorder rec2;
  capacity limited(16, 4096 * mib, rec2.fn());
  limited.set_functions({{"fn_one", 128 * mib, 1}});
  limited.refill(0);
  ASSERT_TRUE(limited.on_delivery("fn_one", 1));
  limited.refill(0);
  EXPECT_EQ(limited.running() + limited.reserved(), 1u);
}

TEST(capacity, an_expired_request_frees_its_slots_and_a_missing_consumer_backs_off) {
  recorder rec;
  capacity cap(4, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 128 * mib, 0}});
  cap.refill(0);
  cap.on_request_end(1, 408, 0);
  EXPECT_EQ(cap.reserved(), 0u);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 2u);
  cap.on_request_end(2, 503, 100);  // no such consumer: wait a second
  cap.refill(500);
  EXPECT_EQ(rec.issued.size(), 2u);
  cap.refill(1200);
  EXPECT_EQ(rec.issued.size(), 3u);
}

TEST(capacity, a_redeploy_with_another_memory_size_releases_exactly_what_was_held) {
  recorder rec;
  capacity cap(8, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 512 * mib, 0}});
  cap.refill(0);
  auto held = cap.on_delivery("fn_a", 1);
  ASSERT_TRUE(held);
  cap.set_functions({{"fn_a", 128 * mib, 0}});  // redeployed smaller while it runs
  cap.on_finished("fn_a", *held);
  cap.refill(0);
  // All 1024 MiB are free again: 8 slots of 128 MiB can be reserved.
  EXPECT_EQ(cap.running() + cap.reserved(), 8u);
}

TEST(capacity, a_message_whose_request_already_ended_runs_only_if_there_is_room) {
  recorder rec;
  capacity cap(1, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 128 * mib, 0}});
  cap.refill(0);
  cap.on_request_end(1, 503, 0);  // given up locally
  auto late = cap.on_delivery("fn_a", 0);
  ASSERT_TRUE(late);  // the one slot is free: it runs rather than burning an attempt
  EXPECT_FALSE(cap.on_delivery("fn_a", 0));  // no room for a second
  cap.on_finished("fn_a", *late);
  EXPECT_EQ(cap.running(), 0u);
}

TEST(capacity, after_stop_reserved_deliveries_run_and_nothing_more_is_pulled) {
  recorder rec;
  capacity cap(4, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 128 * mib, 0}});
  cap.refill(0);
  cap.stop();
  EXPECT_TRUE(cap.on_delivery("fn_a", 1));  // it was reserved: it runs
  EXPECT_FALSE(cap.on_delivery("fn_a", 0));  // anything else is handed back
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);
  EXPECT_FALSE(cap.on_delivery("fn_unknown", 0));
}
