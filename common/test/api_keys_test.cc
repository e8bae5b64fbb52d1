#include <gtest/gtest.h>

#include "common/api_keys.h"

namespace {

std::string error_of(std::string_view yaml) {
  try {
    fnmesh::api_keys::parse(yaml, "keys.yml");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(api_keys, a_bearer_key_names_its_tenant) {
  auto keys = fnmesh::api_keys::parse(
      "default: [aaaaaaaaaaaaaaaa1]\nacme:\n  - bbbbbbbbbbbbbbbb2\n  - cccccccccccccccc3\n", "keys.yml");
  EXPECT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys.tenant_of("Bearer aaaaaaaaaaaaaaaa1"), "default");
  EXPECT_EQ(keys.tenant_of("bearer cccccccccccccccc3"), "acme");
  EXPECT_EQ(keys.tenant_of("Bearer cccccccccccccccc"), std::nullopt);
  EXPECT_EQ(keys.tenant_of("Bearer "), std::nullopt);
  EXPECT_EQ(keys.tenant_of("Basic aaaaaaaaaaaaaaaa1"), std::nullopt);
  EXPECT_EQ(keys.tenant_of(""), std::nullopt);
}

TEST(api_keys, bad_files_are_named_by_line) {
  EXPECT_EQ(error_of("default: [short]\n"),
            "keys.yml:1: default: a key must be at least 16 characters with no spaces");
  EXPECT_EQ(error_of("default: [aaaaaaaaaaaaaaaa1]\nBad_Tenant: [bbbbbbbbbbbbbbbb2]\n"),
            "keys.yml:2: tenant 'Bad_Tenant' must match [a-z0-9][a-z0-9-]{0,62}");
  EXPECT_EQ(error_of("a: [aaaaaaaaaaaaaaaa1]\nb: [aaaaaaaaaaaaaaaa1]\n"), "keys.yml:2: b: a key given twice");
  EXPECT_EQ(error_of("a: x\n"), "keys.yml:1: a: must be a list of keys");
  EXPECT_NE(error_of("").find("must map each tenant"), std::string::npos);
  EXPECT_NE(error_of("a: [\n").find("keys.yml:"), std::string::npos);
}

}  // namespace
