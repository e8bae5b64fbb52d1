#include "broker/client/reply_router.h"

#include <zmq.h>

#include "common/clock.h"
#include "common/errc.h"
#include "broker/client/zmq_message.h"
#include "common/log.h"

namespace fnmesh::broker {

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
    return fail(zmq_error(e));
  }
}

result<result_message> reply_router::receive(std::chrono::milliseconds timeout) {
  const int64_t deadline = mono_now_ns() + timeout.count() * 1'000'000;
  for (;;) {
    auto frames = receive_message(
        socket_, std::chrono::milliseconds(std::max<int64_t>(0, (deadline - mono_now_ns()) / 1'000'000)));
    if (!frames) return fail(frames.error());
    // [identity][Result]: anything else is somebody else's protocol or noise.
    if (frames->size() == 2) {
      std::span<const uint8_t> bytes((*frames)[1].data<uint8_t>(), (*frames)[1].size());
      if (proto::verified<proto::Result>(bytes))
        return result_message(std::vector<uint8_t>(bytes.begin(), bytes.end()));
    }
    ++malformed_;
    // Rate-limited: the first, then every power of two.
    if ((malformed_ & (malformed_ - 1)) == 0)
      logger("reply_router")
          ->warn("{}: dropped a malformed reply ({} frames); {} dropped so far", endpoint_,
                 frames->size(), malformed_);
  }
}

int reply_router::fd() const { return socket_.get(zmq::sockopt::fd); }

}  // namespace fnmesh::broker
