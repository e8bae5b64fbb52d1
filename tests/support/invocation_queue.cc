#include "tests/support/invocation_queue.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "broker/client/subjects.h"
#include "flatbuffers/proto.h"

namespace fnmesh::test {

invocation_queue::invocation_queue(broker::connection& conn, std::string_view function,
                                   std::string_view tenant) {
  const std::string consumer = broker::consumer_name(tenant, function);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = broker::invoke_stream.data();
  so.Consumer = consumer.c_str();
  if (js_PullSubscribe(&sub_, conn.js(), broker::invoke_subject(tenant, function).c_str(),
                       consumer.c_str(), nullptr, &so, nullptr) != NATS_OK)
    throw std::runtime_error("cannot pull from consumer " + consumer + ": " + nats_GetLastError(nullptr));
}

invocation_queue::~invocation_queue() { natsSubscription_Destroy(sub_); }

std::vector<std::vector<uint8_t>> invocation_queue::pull(std::chrono::milliseconds wait) {
  std::vector<std::vector<uint8_t>> out;
  const auto until = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < until) {
    natsMsgList list{};
    if (natsSubscription_Fetch(&list, sub_, 64, 200, nullptr) != NATS_OK) continue;
    for (int i = 0; i < list.Count; ++i) {
      auto* m = list.Msgs[i];
      auto* p = reinterpret_cast<const uint8_t*>(natsMsg_GetData(m));
      out.emplace_back(p, p + natsMsg_GetDataLength(m));
      EXPECT_NE(proto::verified<proto::Invocation>(out.back()), nullptr) << "a malformed invocation";
      natsMsg_AckSync(m, nullptr, nullptr);
    }
    natsMsgList_Destroy(&list);
  }
  return out;
}

std::vector<std::string> invocation_queue::drain_ids(std::chrono::milliseconds idle) {
  std::vector<std::string> ids;
  for (;;) {
    auto got = pull(idle);
    if (got.empty()) return ids;
    for (const auto& data : got)
      if (auto* inv = proto::verified<proto::Invocation>(data)) ids.emplace_back(proto::view(inv->id()));
  }
}

}  // namespace fnmesh::test
