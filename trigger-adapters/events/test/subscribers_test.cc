#include <gtest/gtest.h>

#include "trigger-adapters/events/dispatcher.h"

namespace b = fnmesh::broker;
namespace p = fnmesh::proto;
using fnmesh::events_adapter::subscribers;

namespace {

b::function_ptr spec(std::string_view tenant, std::string_view name,
                     std::vector<std::string> patterns) {
  flatbuffers::FlatBufferBuilder fb;
  flatbuffers::Offset<p::Triggers> triggers;
  if (!patterns.empty()) triggers = p::CreateTriggers(fb, true, 0, fb.CreateVectorOfStrings(patterns));
  auto n = fb.CreateString(name);
  auto t = fb.CreateString(tenant);
  p::FunctionSpecBuilder sb(fb);
  sb.add_name(n);
  sb.add_tenant(t);
  if (!patterns.empty()) sb.add_triggers(triggers);
  fb.Finish(sb.Finish());
  return std::make_shared<b::function_record>(
      std::vector<uint8_t>(fb.GetBufferPointer(), fb.GetBufferPointer() + fb.GetSize()));
}

std::vector<std::string> names(const std::vector<b::function_ptr>& fns) {
  std::vector<std::string> out;
  for (const auto& f : fns) out.emplace_back(p::view(f->spec().name()));
  return out;
}

}  // namespace

TEST(subscribers, wildcards_match_per_nats_rules_and_each_function_comes_once) {
  std::vector<b::function_ptr> all{
      spec("default", "one-level", {"orders.*"}),
      spec("default", "deep", {"orders.>", "orders.created"}),  // two patterns match: once
      spec("default", "exact", {"orders.created"}),
      spec("default", "other", {"payments.*"}),
      spec("default", "no-triggers", {}),
      spec("acme", "other-tenant", {"orders.*"}),
      nullptr,
  };
  EXPECT_EQ(names(subscribers(all, "default", "orders.created")),
            (std::vector<std::string>{"one-level", "deep", "exact"}));
  EXPECT_EQ(names(subscribers(all, "default", "orders.eu.created")),
            (std::vector<std::string>{"deep"}));
  EXPECT_EQ(names(subscribers(all, "default", "orders")), std::vector<std::string>{});
  EXPECT_EQ(names(subscribers(all, "acme", "orders.created")),
            (std::vector<std::string>{"other-tenant"}));
  EXPECT_TRUE(subscribers(all, "default", "nothing.here").empty());
}

TEST(subscribers, a_spec_without_a_tenant_belongs_to_the_default_one) {
  std::vector<b::function_ptr> all{spec("", "legacy", {"orders.*"})};
  EXPECT_EQ(subscribers(all, "default", "orders.created").size(), 1u);
  EXPECT_TRUE(subscribers(all, "acme", "orders.created").empty());
}

TEST(subscribers, durable_names_keep_tenants_apart) {
  EXPECT_EQ(fnmesh::events_adapter::durable_name("default"), "events-adapter");
  EXPECT_EQ(fnmesh::events_adapter::durable_name("acme"), "events-adapter-acme");
}
