// allow_entry: every text form of an allow-list entry, and the errors a user sees.
#include "common/allow_entry.h"

#include <gtest/gtest.h>

namespace fnmesh {
namespace {

std::string canonical(std::string_view text) {
  auto e = parse_allow_entry(text);
  return e ? to_string(*e) : "error: " + e.error();
}

TEST(allow_entry, numeric_forms_read_back_as_they_were_written) {
  for (const char* text : {"10.1.2.3", "10.0.0.0/8", "10.1.2.3:443", "10.0.0.0/8:443", "0.0.0.0/0", "::1",
                           "2001:db8::/32", "[2001:db8::1]:443", "[2001:db8::/32]:443", "[::1]:80"})
    EXPECT_EQ(canonical(text), text);
  EXPECT_EQ(canonical("[10.1.2.3]:80"), "10.1.2.3:80");
  EXPECT_EQ(canonical("::ffff:127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(canonical("10.1.2.3/8"), "10.0.0.0/8");  // bits past the prefix are dropped
}

TEST(allow_entry, ipv4_is_held_mapped_into_ipv6) {
  auto e = parse_allow_entry("192.168.0.0/16:53");
  ASSERT_TRUE(e) << e.error();
  EXPECT_EQ(e->prefix, 96 + 16);
  EXPECT_EQ(e->port, 53);
  const std::array<uint8_t, 16> want = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 0, 0};
  EXPECT_EQ(e->address, want);
  auto any = parse_allow_entry("::1");
  ASSERT_TRUE(any);
  EXPECT_EQ(any->prefix, 128);
  EXPECT_EQ(any->port, 0);
}

TEST(allow_entry, host_names_are_split_for_the_resolver) {
  auto t = split_allow_entry("api.example.com:443");
  ASSERT_TRUE(t) << t.error();
  EXPECT_EQ(t->host, "api.example.com");
  EXPECT_EQ(t->port, 443);
  EXPECT_EQ(t->prefix, -1);
  EXPECT_EQ(split_allow_entry("localhost")->port, 0);
  EXPECT_EQ(parse_allow_entry("api.example.com:443").error(), "api.example.com is not an IPv4 or IPv6 address");
}

TEST(allow_entry, bad_entries_say_what_is_wrong) {
  EXPECT_EQ(canonical(""), "error: the entry is empty");
  EXPECT_EQ(canonical("10.0.0.1:70000"), "error: port 70000 is not 1-65535");
  EXPECT_EQ(canonical("10.0.0.1:0"), "error: port 0 is not 1-65535");
  EXPECT_EQ(canonical("10.0.0.1:"), "error: the port is missing after ':'");
  EXPECT_EQ(canonical("10.0.0.0/33"), "error: prefix length 33 is not 0-32");
  EXPECT_EQ(canonical("::/129"), "error: prefix length 129 is not 0-128");
  EXPECT_EQ(canonical("10.0.0.0/x"), "error: prefix length x is not 0-128");
  EXPECT_EQ(canonical("[::1"), "error: '[' without ']'");
  EXPECT_EQ(canonical("[::1]443"), "error: after ']' comes :port");
  EXPECT_EQ(canonical("10.0.0.1 80"), "error: the entry has a space in it");
  EXPECT_EQ(canonical(":80"), "error: the address is missing");
  EXPECT_EQ(canonical("10.0.0.256"), "error: 10.0.0.256 is not an IPv4 or IPv6 address");
}

}  // namespace
}  // namespace fnmesh
