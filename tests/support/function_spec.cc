#include "tests/support/function_spec.h"

#include "broker/client/kv.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "common/errc.h"

namespace fnmesh::test {

std::vector<uint8_t> encode_spec(const function_fields& f) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<proto::KeyValue>> env;
  for (const auto& [k, v] : f.env) env.push_back(proto::CreateKeyValueDirect(b, k.c_str(), v.c_str()));
  auto strings = [&b](const std::vector<std::string>& v) {
    return v.empty() ? 0 : b.CreateVectorOfStrings(v);
  };
  auto triggers = proto::CreateTriggers(b, f.http, strings(f.cron), strings(f.events), strings(f.files));
  b.Finish(proto::CreateFunctionSpecDirect(
      b, f.name.c_str(), f.version.c_str(), f.tenant.c_str(), f.runtime, f.handler.c_str(),
      f.memory_mb, f.timeout_s, f.concurrency, env.empty() ? nullptr : &env,
      f.network, nullptr, f.retries, nullptr, triggers, nullptr, f.tmp_mb, f.pids_max,
      f.cpu_budget_ms));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

broker::function_ptr function_record_of(const function_fields& f) {
  return std::make_shared<broker::function_record>(encode_spec(f));
}

result<void> deploy_spec(broker::connection& conn, std::span<const uint8_t> spec) {
  const auto* parsed = proto::verified<proto::FunctionSpec>(spec);
  if (!parsed) return fail(errc::malformed);
  auto bucket = broker::kv_bucket::open(conn, broker::functions_bucket);
  if (!bucket) return fail(bucket.error());
  if (auto put = (*bucket)->put(
          broker::function_key(proto::view(parsed->tenant()), proto::view(parsed->name())), spec);
      !put)
    return put;
  return broker::ensure_function_consumer(conn, *parsed);
}

}  // namespace fnmesh::test
