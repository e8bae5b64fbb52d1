#include "broker/client/reply_router.h"

#include <zmq.h>

#include "common/clock.h"
#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::broker {
namespace {

std::error_code from_zmq(const zmq::error_t& e) {
  if (e.num() == ETERM) return errc::closed;
  return {e.num(), std::system_category()};
}

}  // namespace

result<std::unique_ptr<reply_router>> reply_router::bind(zmq::context_t& ctx,
                                                         const std::string& host) {
  try {
    zmq::socket_t s(ctx, zmq::socket_type::router);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::maxmsgsize, int64_t(proto::max_message_bytes));
    s.bind("tcp://" + host + ":*");
    std::string endpoint = s.get(zmq::sockopt::last_endpoint);
    return std::unique_ptr<reply_router>(new reply_router(std::move(s), std::move(endpoint)));
  } catch (const zmq::error_t& e) {
    return fail(from_zmq(e));
  }
}

result<result_message> reply_router::receive(std::chrono::milliseconds timeout) {
  const int64_t deadline = mono_now_ns() + timeout.count() * 1'000'000;
  try {
    for (;;) {
      std::vector<zmq::message_t> frames;
      zmq::message_t frame;
      if (!socket_.recv(frame, zmq::recv_flags::dontwait)) {
        const int64_t left_ms = (deadline - mono_now_ns() + 999'999) / 1'000'000;
        if (left_ms <= 0) return fail(errc::timeout);
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(left_ms));
        continue;
      }
      frames.push_back(std::move(frame));
      while (frames.back().more()) {
        zmq::message_t next;
        if (!socket_.recv(next, zmq::recv_flags::none)) break;
        frames.push_back(std::move(next));
      }
      // [identity][Result]: anything else is somebody else's protocol or noise.
      if (frames.size() == 2) {
        auto payload = frames[1].data<uint8_t>();
        std::span<const uint8_t> bytes(payload, frames[1].size());
        if (proto::verified<proto::Result>(bytes))
          return result_message(std::vector<uint8_t>(bytes.begin(), bytes.end()));
      }
      ++malformed_;
      // Rate-limited: the first, then every power of two.
      if ((malformed_ & (malformed_ - 1)) == 0)
        logger("reply_router")
            ->warn("{}: dropped a malformed reply ({} frames); {} dropped so far", endpoint_,
                   frames.size(), malformed_);
    }
  } catch (const zmq::error_t& e) {
    return fail(from_zmq(e));
  }
}

int reply_router::fd() const { return socket_.get(zmq::sockopt::fd); }

}  // namespace fnmesh::broker
