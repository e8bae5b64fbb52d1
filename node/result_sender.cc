#include "node/result_sender.h"

#include "common/errc.h"

namespace fnmesh::node {

namespace {
constexpr int64_t idle_ms = 60'000;
}

result_sender::result_sender(zmq::context_t& ctx, size_t max_endpoints)
    : ctx_(ctx), max_endpoints_(max_endpoints) {}

void result_sender::evict_idle(int64_t now_ms) {
  std::erase_if(peers_, [&](const auto& kv) { return now_ms - kv.second.last_used_ms > idle_ms; });
  while (peers_.size() >= max_endpoints_) {
    auto oldest = peers_.begin();
    for (auto it = peers_.begin(); it != peers_.end(); ++it)
      if (it->second.last_used_ms < oldest->second.last_used_ms) oldest = it;
    peers_.erase(oldest);
  }
}

result<void> result_sender::send(const std::string& endpoint, std::span<const uint8_t> result,
                                 int64_t now_ms) {
  if (!endpoint.starts_with("tcp://") && !endpoint.starts_with("ipc://"))
    return fail(errc::invalid_argument);
  auto it = peers_.find(endpoint);
  if (it == peers_.end()) {
    evict_idle(now_ms);
    zmq::socket_t socket(ctx_, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 2000);
    socket.set(zmq::sockopt::sndhwm, 10000);
    try {
      socket.connect(endpoint);
    } catch (const zmq::error_t&) {
      return fail(errc::invalid_argument);
    }
    it = peers_.emplace(endpoint, peer{std::move(socket), now_ms}).first;
  }
  it->second.last_used_ms = now_ms;
  // A full queue (the caller is gone) drops the Result: the collector still has it.
  (void)it->second.socket.send(zmq::const_buffer(result.data(), result.size()),
                               zmq::send_flags::dontwait);
  return {};
}

}  // namespace fnmesh::node
