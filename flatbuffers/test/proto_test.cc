#include <gtest/gtest.h>

#include <vector>

#include "flatbuffers/proto.h"

namespace p = fnmesh::proto;

namespace {
std::vector<uint8_t> sample_invocation() {
  flatbuffers::FlatBufferBuilder b;
  auto payload = b.CreateVector(std::vector<uint8_t>{'{', '}'});
  auto reply = p::CreateReplyToDirect(b, "tcp://127.0.0.1:5555", 42);
  auto inv = p::CreateInvocation(b, b.CreateString("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                                 b.CreateString("default"), b.CreateString("hello"),
                                 b.CreateString("v1"), payload, b.CreateString("application/json"),
                                 p::Trigger::cli, 0, 0, reply);
  b.Finish(inv);
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}
}  // namespace

TEST(proto, a_well_formed_invocation_verifies_and_reads_back) {
  auto buf = sample_invocation();
  auto* inv = p::verified<p::Invocation>(buf);
  ASSERT_NE(inv, nullptr);
  EXPECT_EQ(p::view(inv->function()), "hello");
  EXPECT_EQ(p::text(p::bytes(inv->payload())), "{}");
  ASSERT_NE(inv->reply(), nullptr);
  EXPECT_EQ(inv->reply()->correlation(), 42u);
  EXPECT_EQ(inv->trigger(), p::Trigger::cli);
}

TEST(proto, truncated_and_garbage_buffers_are_rejected) {
  auto buf = sample_invocation();
  // Cut anywhere before the last field's data: trailing alignment padding may still verify.
  for (size_t cut = 0; cut < buf.size() / 2; ++cut)
    EXPECT_EQ(p::verified<p::Invocation>(std::span(buf.data(), cut)), nullptr) << cut;
  std::vector<uint8_t> garbage(256, 0xff);
  EXPECT_EQ(p::verified<p::Invocation>(garbage), nullptr);
  EXPECT_EQ(p::verified<p::CollectorRequest>(garbage), nullptr);
}

TEST(proto, enum_names_are_the_wire_names) {
  EXPECT_STREQ(p::status_name(p::Status::no_such_function), "no_such_function");
  EXPECT_STREQ(p::runtime_name(p::Runtime::python3), "python3");
}
