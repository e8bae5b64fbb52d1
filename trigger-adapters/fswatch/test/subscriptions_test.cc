// Which functions one file event goes to: the folders each function's spec watches, one
// watch per folder however many functions share it, and the change handler's updates.
#include <gtest/gtest.h>

#include "tests/support/function_spec.h"
#include "trigger-adapters/fswatch/subscriptions.h"

namespace fnmesh::fswatch {
namespace {

using strings = std::vector<std::string>;

TEST(folders_of, normalises_absolute_folders_of_the_tenant_and_skips_the_rest) {
  auto rec = test::function_record_of(
      {.name = "resize", .files = {"/data/in/", "/data//in", "/data/x/../out", "relative"}});
  EXPECT_EQ(folders_of(rec->spec(), "default"), (strings{"/data/in", "/data/out"}));
  EXPECT_TRUE(folders_of(rec->spec(), "acme").empty());
  auto acme = test::function_record_of({.name = "resize", .tenant = "acme", .files = {"/a"}});
  EXPECT_EQ(folders_of(acme->spec(), "acme"), strings{"/a"});
  EXPECT_TRUE(folders_of(test::function_record_of({})->spec(), "default").empty());
}

TEST(subscriptions, a_folder_shared_by_two_functions_is_one_watch_with_two_subscribers) {
  subscriptions s;
  EXPECT_TRUE(s.set("default.resize", "resize", {"/in", "/photos"}));
  EXPECT_TRUE(s.set("default.thumbs", "thumbs", {"/photos"}) == false);  // already watched
  EXPECT_EQ(s.folders(), (std::set<std::string>{"/in", "/photos"}));
  EXPECT_EQ(s.subscribers("/photos"), (strings{"resize", "thumbs"}));
  EXPECT_EQ(s.subscribers("/in"), strings{"resize"});
  EXPECT_TRUE(s.subscribers("/elsewhere").empty());
}

TEST(subscriptions, a_redeploy_or_removal_moves_the_watches) {
  subscriptions s;
  s.set("default.resize", "resize", {"/in", "/photos"});
  s.set("default.thumbs", "thumbs", {"/photos"});
  EXPECT_TRUE(s.set("default.resize", "resize", {"/in2"}));  // redeployed elsewhere
  EXPECT_EQ(s.folders(), (std::set<std::string>{"/in2", "/photos"}));
  EXPECT_EQ(s.subscribers("/photos"), strings{"thumbs"});
  EXPECT_TRUE(s.remove("default.thumbs"));
  EXPECT_EQ(s.folders(), std::set<std::string>{"/in2"});
  EXPECT_FALSE(s.remove("default.unknown"));
  EXPECT_FALSE(s.set("default.resize", "resize", {"/in2"}));  // same spec again
}

}  // namespace
}  // namespace fnmesh::fswatch
