#include "broker/client/subjects.h"

#include <gtest/gtest.h>

#include <string>

namespace fnmesh::broker {
namespace {

TEST(valid_name, accepts_lowercase_digits_and_inner_dashes) {
  EXPECT_TRUE(valid_name("resize"));
  EXPECT_TRUE(valid_name("a"));
  EXPECT_TRUE(valid_name("0-fn-9"));
  EXPECT_TRUE(valid_name(std::string(63, 'x')));
}

TEST(valid_name, refuses_what_would_break_a_subject) {
  EXPECT_FALSE(valid_name(""));
  EXPECT_FALSE(valid_name("-lead"));
  EXPECT_FALSE(valid_name("Upper"));
  EXPECT_FALSE(valid_name("a.b"));
  EXPECT_FALSE(valid_name("a*"));
  EXPECT_FALSE(valid_name("a>"));
  EXPECT_FALSE(valid_name("a b"));
  EXPECT_FALSE(valid_name("a_b"));
  EXPECT_FALSE(valid_name(std::string(64, 'x')));
}

TEST(subjects, names) {
  EXPECT_EQ(invoke_subject("default", "resize"), "fnmesh.invoke.default.resize");
  EXPECT_EQ(event_subject("orders.created"), "fnmesh.events.orders.created");
  EXPECT_EQ(dlq_subject("t", "f"), "fnmesh.dlq.t.f");
  EXPECT_EQ(logs_subject("t", "f"), "fnmesh.logs.t.f");
  EXPECT_TRUE(subject_matches("fnmesh.logs.>", logs_subject("default", "resize")));
  EXPECT_EQ(consumer_name("t", "f-1"), "fn_t_f-1");
  EXPECT_EQ(function_key("t", "f"), "t.f");
}

TEST(subject_matches, literal) {
  EXPECT_TRUE(subject_matches("a.b.c", "a.b.c"));
  EXPECT_FALSE(subject_matches("a.b.c", "a.b"));
  EXPECT_FALSE(subject_matches("a.b", "a.b.c"));
  EXPECT_FALSE(subject_matches("a.b.c", "a.b.d"));
  EXPECT_FALSE(subject_matches("", "a"));
  EXPECT_FALSE(subject_matches("a", ""));
}

TEST(subject_matches, star_matches_exactly_one_token) {
  EXPECT_TRUE(subject_matches("images.*", "images.uploaded"));
  EXPECT_FALSE(subject_matches("images.*", "images"));
  EXPECT_FALSE(subject_matches("images.*", "images.a.b"));
  EXPECT_TRUE(subject_matches("*.created", "orders.created"));
  EXPECT_TRUE(subject_matches("a.*.c", "a.b.c"));
  EXPECT_FALSE(subject_matches("a.*.c", "a..c"));
}

TEST(subject_matches, gt_matches_one_or_more_trailing_tokens) {
  EXPECT_TRUE(subject_matches("orders.>", "orders.created"));
  EXPECT_TRUE(subject_matches("orders.>", "orders.created.eu"));
  EXPECT_FALSE(subject_matches("orders.>", "orders"));
  EXPECT_TRUE(subject_matches(">", "anything.at.all"));
  EXPECT_FALSE(subject_matches("a.>.c", "a.b.c"));  // '>' only as the last token
  EXPECT_TRUE(subject_matches("*.>", "a.b"));
  EXPECT_FALSE(subject_matches("*.>", "a"));
}

}  // namespace
}  // namespace fnmesh::broker
