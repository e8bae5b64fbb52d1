#pragma once
// reply_router: the ROUTER socket a synchronous caller binds (127.0.0.1, ephemeral port)
// and names in Invocation.reply; nodes send Results to it. Owns the zmq socket; use it
// from one thread. Frames that fail verification are dropped and counted.
#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {

// A verified Result buffer.
class result_message {
 public:
  explicit result_message(std::vector<uint8_t> buffer) : buffer_(std::move(buffer)) {}
  const proto::Result& get() const noexcept {
    return *flatbuffers::GetRoot<proto::Result>(buffer_.data());
  }
  std::span<const uint8_t> buffer() const noexcept { return buffer_; }

 private:
  std::vector<uint8_t> buffer_;
};

class reply_router {
 public:
  static result<std::unique_ptr<reply_router>> bind(zmq::context_t& ctx,
                                                    const std::string& host = "127.0.0.1");
  const std::string& endpoint() const noexcept { return endpoint_; }  // tcp://127.0.0.1:PORT

  // The next verified Result, or errc::timeout. Malformed frames are skipped.
  result<result_message> receive(std::chrono::milliseconds timeout);
  // The socket's fd for poll/epoll integration (ZMQ_FD semantics: edge-triggered).
  int fd() const;
  uint64_t malformed() const noexcept { return malformed_; }

 private:
  explicit reply_router(zmq::socket_t s, std::string endpoint)
      : socket_(std::move(s)), endpoint_(std::move(endpoint)) {}
  zmq::socket_t socket_;
  std::string endpoint_;
  uint64_t malformed_ = 0;
};

}  // namespace fnmesh::broker
