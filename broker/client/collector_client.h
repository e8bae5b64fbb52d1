#pragma once
// collector_client: a DEALER to the billing collector's ROUTER for completion batches
// (node reporter) and activation lookups (tests; users query the HTTP API). Frames are
// one CollectorRequest / CollectorReply each (flatbuffers/fnmesh.fbs). Owns one zmq
// socket; use it from one thread.
#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {

// A verified CollectorReply buffer.
class collector_reply {
 public:
  explicit collector_reply(std::vector<uint8_t> buffer) : buffer_(std::move(buffer)) {}
  const proto::CollectorReply& get() const noexcept {
    return *flatbuffers::GetRoot<proto::CollectorReply>(buffer_.data());
  }
  std::span<const uint8_t> buffer() const noexcept { return buffer_; }

 private:
  std::vector<uint8_t> buffer_;
};

class collector_client {
 public:
  // Connects (lazily: sends queue until the collector is up). Throws zmq::error_t on a
  // malformed endpoint: a start-up error.
  collector_client(zmq::context_t& ctx, const std::string& endpoint);

  // Sends a finished CollectorRequest buffer (non-blocking; queued while disconnected).
  result<void> send(std::span<const uint8_t> request);
  // The next verified reply, or errc::timeout. Malformed replies are dropped.
  result<collector_reply> receive(std::chrono::milliseconds timeout);

  // Every stored attempt of one invocation: send, then wait for the reply with that id.
  result<collector_reply> query_activation(const std::string& invocation_id,
                                           std::chrono::milliseconds timeout);
  int fd() const;

 private:
  // Sends the finished request `b` (whose request_id is `request_id`) and waits for the
  // reply with that id; replies to earlier, timed-out requests are dropped.
  result<collector_reply> request(uint64_t request_id, flatbuffers::FlatBufferBuilder& b,
                                  std::chrono::milliseconds timeout);
  zmq::socket_t socket_;
  uint64_t next_request_id_ = 1;
};

}  // namespace fnmesh::broker
