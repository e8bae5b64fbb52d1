#include "common/base64.h"

#include <gtest/gtest.h>

#include <string_view>

namespace {

std::string encoded(std::string_view s) {
  return fnmesh::base64({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

}  // namespace

TEST(base64, rfc4648_test_vectors) {
  EXPECT_EQ(encoded(""), "");
  EXPECT_EQ(encoded("f"), "Zg==");
  EXPECT_EQ(encoded("fo"), "Zm8=");
  EXPECT_EQ(encoded("foo"), "Zm9v");
  EXPECT_EQ(encoded("foob"), "Zm9vYg==");
  EXPECT_EQ(encoded("fooba"), "Zm9vYmE=");
  EXPECT_EQ(encoded("foobar"), "Zm9vYmFy");
}

TEST(base64, every_byte_value) {
  const uint8_t bytes[] = {0x00, 0xff, 0xfe, 0x80};
  EXPECT_EQ(fnmesh::base64(bytes), "AP/+gA==");
}
