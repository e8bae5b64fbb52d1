#include "broker/client/log_publisher.h"

#include <gtest/gtest.h>

#include <string>

namespace fnmesh::broker {
namespace {

constexpr int64_t ms = 1'000'000;

TEST(token_bucket, a_burst_then_the_sustained_rate) {
  const log_limits limits{.lines_per_s = 1000, .burst = 1000};
  token_bucket b;
  const int64_t t0 = 5'000 * ms;
  int taken = 0;
  for (int i = 0; i < 1500; ++i) taken += b.take(t0, limits);
  EXPECT_EQ(taken, 1000);
  EXPECT_FALSE(b.take(t0, limits));
  taken = 0;
  for (int i = 0; i < 100; ++i) taken += b.take(t0 + 50 * ms, limits);  // 50 ms refill 50
  EXPECT_EQ(taken, 50);
  taken = 0;
  for (int i = 0; i < 5000; ++i) taken += b.take(t0 + 60'000 * ms, limits);  // capped at burst
  EXPECT_EQ(taken, 1000);
}

TEST(encode_log_line, every_field_round_trips) {
  flatbuffers::FlatBufferBuilder fbb;
  const log_line l{.tenant = "acme", .function = "resize", .version = "v7",
                   .invocation_id = "01HZX", .node_id = "node-1", .sandbox = "sb-3",
                   .stream = proto::LogStream::stderr, .line = "hello", .time_ns = 1234};
  const auto* m = proto::verified<proto::LogLine>(encode_log_line(fbb, l, 16 << 10));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(proto::view(m->tenant()), "acme");
  EXPECT_EQ(proto::view(m->function()), "resize");
  EXPECT_EQ(proto::view(m->version()), "v7");
  EXPECT_EQ(proto::view(m->invocation_id()), "01HZX");
  EXPECT_EQ(proto::view(m->node_id()), "node-1");
  EXPECT_EQ(proto::view(m->sandbox()), "sb-3");
  EXPECT_EQ(m->stream(), proto::LogStream::stderr);
  EXPECT_EQ(proto::view(m->line()), "hello");
  EXPECT_EQ(m->time_ns(), 1234);
}

TEST(encode_log_line, a_long_line_is_cut_between_characters) {
  flatbuffers::FlatBufferBuilder fbb;
  const std::string line = std::string(9, 'a') + "\xc3\xa9" + "tail";  // é spans bytes 9-10
  log_line l{.line = line};
  const auto* m = proto::verified<proto::LogLine>(encode_log_line(fbb, l, 10));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(proto::view(m->line()), std::string(9, 'a'));
  m = proto::verified<proto::LogLine>(encode_log_line(fbb, l, 11));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(proto::view(m->line()), std::string(9, 'a') + "\xc3\xa9");
  EXPECT_EQ(proto::view(m->invocation_id()), "");  // a line outside an invocation
}

}  // namespace
}  // namespace fnmesh::broker
