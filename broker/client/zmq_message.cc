#include "broker/client/zmq_message.h"

#include "common/clock.h"
#include "common/errc.h"

namespace fnmesh::broker {

std::error_code zmq_error(const zmq::error_t& e) noexcept {
  if (e.num() == ETERM) return errc::closed;
  return {e.num(), std::system_category()};
}

result<std::vector<zmq::message_t>> receive_message(zmq::socket_t& socket,
                                                    std::chrono::milliseconds timeout) {
  const int64_t deadline = mono_now_ns() + timeout.count() * 1'000'000;
  try {
    zmq::message_t frame;
    while (!socket.recv(frame, zmq::recv_flags::dontwait)) {
      const int64_t left_ms = (deadline - mono_now_ns() + 999'999) / 1'000'000;
      if (left_ms <= 0) return fail(errc::timeout);
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(left_ms));
    }
    std::vector<zmq::message_t> frames;
    frames.push_back(std::move(frame));
    while (frames.back().more()) {
      zmq::message_t next;
      if (!socket.recv(next, zmq::recv_flags::none)) break;
      frames.push_back(std::move(next));
    }
    return frames;
  } catch (const zmq::error_t& e) {
    return fail(zmq_error(e));
  }
}

}  // namespace fnmesh::broker
