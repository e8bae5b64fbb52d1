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
  uint32_t total() const {
    uint32_t n = 0;
    for (const auto& [_, r] : issued) n += r.batch;
    return n;
  }
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
  EXPECT_TRUE(cap.on_delivery("fn_a"));
  cap.on_request_end(1, 0, 0, 0);  // batch of 1 fully served: fn_a is hungry
  EXPECT_EQ(cap.running(), 1u);
  EXPECT_EQ(cap.reserved(), 0u);
  cap.refill(0);
  // One waiting request plus the remaining slots shared by the hungry function.
  EXPECT_EQ(cap.running() + cap.reserved(), 4u);
  cap.on_finished("fn_a");
  EXPECT_EQ(cap.running(), 0u);
}

TEST(capacity, memory_budget_and_function_concurrency_bound_what_is_pulled) {
  recorder rec;
  capacity cap(16, 512 * mib, rec.fn());
  cap.set_functions({{"fn_big", 256 * mib, 0}});
  cap.refill(0);
  ASSERT_TRUE(cap.on_delivery("fn_big"));
  cap.on_request_end(1, 0, 0, 0);
  cap.refill(0);
  EXPECT_EQ(cap.running() + cap.reserved(), 2u);  // 2 x 256 MiB fill 512 MiB

  recorder rec2;
  capacity limited(16, 4096 * mib, rec2.fn());
  limited.set_functions({{"fn_one", 128 * mib, 1}});
  limited.refill(0);
  ASSERT_TRUE(limited.on_delivery("fn_one"));
  limited.on_request_end(1, 0, 0, 0);
  limited.refill(0);
  EXPECT_EQ(limited.running() + limited.reserved(), 1u);
}

TEST(capacity, an_expired_request_frees_its_slots_and_a_missing_consumer_backs_off) {
  recorder rec;
  capacity cap(4, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 128 * mib, 0}});
  cap.refill(0);
  cap.on_request_end(1, 1, 408, 0);
  EXPECT_EQ(cap.reserved(), 0u);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 2u);
  cap.on_request_end(2, 1, 503, 100);  // no such consumer: wait a second
  cap.refill(500);
  EXPECT_EQ(rec.issued.size(), 2u);
  cap.refill(1200);
  EXPECT_EQ(rec.issued.size(), 3u);
}

TEST(capacity, after_stop_deliveries_are_handed_back_and_nothing_is_pulled) {
  recorder rec;
  capacity cap(4, 1024 * mib, rec.fn());
  cap.set_functions({{"fn_a", 128 * mib, 0}});
  cap.refill(0);
  cap.stop();
  EXPECT_FALSE(cap.on_delivery("fn_a"));
  EXPECT_EQ(cap.running(), 0u);
  cap.refill(0);
  EXPECT_EQ(rec.issued.size(), 1u);
  EXPECT_FALSE(cap.on_delivery("fn_unknown"));
}
