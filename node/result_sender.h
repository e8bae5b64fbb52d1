#pragma once
// result_sender: sends each sync Result straight to the ZeroMQ ROUTER endpoint its
// invocation names, over one DEALER per endpoint, cached and closed when idle. Owns those
// sockets; used from the executor's loop thread only.
#include <zmq.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>

#include "common/result.h"

namespace fnmesh::node {

class result_sender {
 public:
  explicit result_sender(zmq::context_t& ctx, size_t max_endpoints = 256);

  // Queues the Result; false only when the endpoint is not a tcp:// or ipc:// address.
  result<void> send(const std::string& endpoint, std::span<const uint8_t> result, int64_t now_ms);

 private:
  struct peer {
    zmq::socket_t socket;
    int64_t last_used_ms;
  };
  void evict_idle(int64_t now_ms);

  zmq::context_t& ctx_;
  size_t max_endpoints_;
  std::unordered_map<std::string, peer> peers_;
};

}  // namespace fnmesh::node
