#include <gtest/gtest.h>

#include "trigger-adapters/events/stored_subscribers.h"

using fnmesh::events_adapter::stored_subscribers;

TEST(stored_subscribers, a_redelivery_finds_the_subscribers_stored_the_first_time) {
  stored_subscribers s(16);
  s.add(7, "default.one-level");
  s.add(7, "default.all-orders");
  s.add(8, "default.payments");
  EXPECT_TRUE(s.contains(7, "default.one-level"));
  EXPECT_TRUE(s.contains(7, "default.all-orders"));
  EXPECT_FALSE(s.contains(7, "default.payments"));  // stored for event 8 only
  EXPECT_FALSE(s.contains(9, "default.one-level"));
  s.add(7, "default.one-level");  // twice: still one entry
  EXPECT_EQ(s.events(), 2u);
}

TEST(stored_subscribers, an_acked_event_is_forgotten) {
  stored_subscribers s(16);
  s.add(7, "default.one-level");
  s.forget(7);
  s.forget(42);  // never seen: nothing to do
  EXPECT_FALSE(s.contains(7, "default.one-level"));
  EXPECT_EQ(s.events(), 0u);
}

TEST(stored_subscribers, beyond_its_bound_it_drops_the_event_used_least_recently) {
  stored_subscribers s(3);
  s.add(1, "default.a");
  s.add(2, "default.a");
  s.add(3, "default.a");
  EXPECT_TRUE(s.contains(1, "default.a"));  // event 1 is being retried: 2 is now the oldest
  s.add(4, "default.a");
  EXPECT_EQ(s.events(), 3u);
  EXPECT_TRUE(s.contains(1, "default.a"));
  EXPECT_FALSE(s.contains(2, "default.a"));
  EXPECT_TRUE(s.contains(3, "default.a"));
  EXPECT_TRUE(s.contains(4, "default.a"));
  s.add(4, "default.b");  // a known event grows without dropping another
  EXPECT_EQ(s.events(), 3u);
  EXPECT_TRUE(s.contains(1, "default.a"));
}
