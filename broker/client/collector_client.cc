#include "broker/client/collector_client.h"

#include <zmq.h>

#include <thread>

#include "common/clock.h"
#include "common/errc.h"
#include "broker/client/zmq_message.h"
#include "common/log.h"

namespace fnmesh::broker {

collector_client::collector_client(zmq::context_t& ctx, const std::string& endpoint)
    : socket_(ctx, zmq::socket_type::dealer) {
  socket_.set(zmq::sockopt::linger, 0);
  // Queue nothing while the collector is away: a send fails at once and the caller
  // retries, instead of stale copies piling up for the collector's return.
  socket_.set(zmq::sockopt::immediate, 1);
  socket_.set(zmq::sockopt::sndhwm, 16);
  socket_.connect(endpoint);
}

result<void> collector_client::send(std::span<const uint8_t> request) {
  try {
    if (!socket_.send(zmq::buffer(request.data(), request.size()), zmq::send_flags::dontwait))
      return fail(errc::unavailable);  // the send queue is full (collector away too long)
    return {};
  } catch (const zmq::error_t& e) {
    return fail(zmq_error(e));
  }
}

result<collector_reply> collector_client::receive(std::chrono::milliseconds timeout) {
  const int64_t deadline = mono_now_ns() + timeout.count() * 1'000'000;
  for (;;) {
    auto frames = receive_message(
        socket_, std::chrono::milliseconds(std::max<int64_t>(0, (deadline - mono_now_ns()) / 1'000'000)));
    if (!frames) return fail(frames.error());
    if (frames->size() == 1) {
      std::span<const uint8_t> bytes((*frames)[0].data<uint8_t>(), (*frames)[0].size());
      if (proto::verified<proto::CollectorReply>(bytes))
        return collector_reply(std::vector<uint8_t>(bytes.begin(), bytes.end()));
    }
    logger("collector_client")->warn("dropped a malformed collector reply ({} frames)",
                                     frames->size());
  }
}

result<collector_reply> collector_client::query_activation(const std::string& invocation_id,
                                                           std::chrono::milliseconds timeout) {
  flatbuffers::FlatBufferBuilder b;
  const uint64_t id = next_request_id_++;
  auto q = proto::CreateActivationQueryDirect(b, invocation_id.c_str());
  b.Finish(
      proto::CreateCollectorRequest(b, id, proto::RequestBody::ActivationQuery, q.Union()));
  return request(id, b, timeout);
}

result<collector_reply> collector_client::request(uint64_t request_id,
                                                  flatbuffers::FlatBufferBuilder& b,
                                                  std::chrono::milliseconds timeout) {
  const int64_t deadline = mono_now_ns() + timeout.count() * 1'000'000;
  // Right after connect (or while the collector restarts) there is no peer yet.
  for (auto sent = send(proto::bytes(b)); !sent; sent = send(proto::bytes(b))) {
    if (sent.error() != errc::unavailable || mono_now_ns() >= deadline) return fail(sent.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (;;) {
    const int64_t left_ns = deadline - mono_now_ns();
    if (left_ns <= 0) return fail(errc::timeout);
    auto reply = receive(std::chrono::milliseconds((left_ns + 999'999) / 1'000'000));
    if (!reply) return reply;
    if (reply->get().request_id() == request_id) return reply;
    // A late reply to an earlier request that timed out: not ours, drop it.
  }
}

int collector_client::fd() const { return socket_.get(zmq::sockopt::fd); }

}  // namespace fnmesh::broker
