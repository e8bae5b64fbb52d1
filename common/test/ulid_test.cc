#include <gtest/gtest.h>

#include <set>

#include "common/ulid.h"

TEST(ulid, is_26_crockford_characters_and_unique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = fnmesh::new_ulid();
    EXPECT_TRUE(fnmesh::is_ulid(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(ulid, sorts_by_creation_time) {
  auto a = fnmesh::new_ulid();
  usleep(2000);
  auto b = fnmesh::new_ulid();
  EXPECT_LT(a.substr(0, 10), b.substr(0, 10));
}

TEST(ulid, rejects_text_that_is_not_a_ulid) {
  EXPECT_FALSE(fnmesh::is_ulid("short"));
  EXPECT_FALSE(fnmesh::is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAU"));  // 'U' not in the alphabet
  EXPECT_TRUE(fnmesh::is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
}
