#include <gtest/gtest.h>

#include <set>

#include "common/ulid.h"
#include "broker/client/event_id.h"

using fnmesh::broker::event_invocation_id;

namespace {
constexpr int64_t t0 = 1'795'000'000'123'456'789;  // a unix time in ns (2026)
}

TEST(event_id, is_a_valid_ulid_carrying_the_event_time) {
  auto id = event_invocation_id(t0, 42, "default.resize");
  EXPECT_TRUE(fnmesh::is_ulid(id)) << id;
  // Same millisecond, other inputs: the 10-character time prefix is shared.
  EXPECT_EQ(id.substr(0, 10), event_invocation_id(t0 + 500'000, 7, "default.x").substr(0, 10));
  // A later event sorts after an earlier one.
  EXPECT_LT(id, event_invocation_id(t0 + 5'000'000, 1, "default.resize"));
  // Bounds: time 0 and the largest time still give valid ULIDs.
  EXPECT_TRUE(fnmesh::is_ulid(event_invocation_id(0, 0, "")));
  EXPECT_TRUE(fnmesh::is_ulid(event_invocation_id(INT64_MAX, ~0ull,
                                                  "t.f")));
}

TEST(event_id, same_inputs_give_the_same_id) {
  EXPECT_EQ(event_invocation_id(t0, 42, "default.resize"),
            event_invocation_id(t0, 42, "default.resize"));
}

TEST(event_id, another_function_or_event_gives_another_id) {
  const auto base = event_invocation_id(t0, 42, "default.resize");
  EXPECT_NE(base, event_invocation_id(t0, 42, "default.thumbnail"));
  EXPECT_NE(base, event_invocation_id(t0, 43, "default.resize"));
  EXPECT_NE(base, event_invocation_id(t0, 42, "acme.resize"));
  // Many events × functions in the same millisecond: no collisions.
  std::set<std::string> seen;
  for (uint64_t seq = 1; seq <= 2000; ++seq)
    for (auto fn : {"default.a", "default.b", "default.c"})
      seen.insert(event_invocation_id(t0, seq, fn));
  EXPECT_EQ(seen.size(), 6000u);
}
