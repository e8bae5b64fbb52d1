#pragma once
// connection: one NATS connection and its JetStream context (nats.c handles, owned).
// Thread-safe: nats.c allows publishing from any thread; callbacks run on nats.c threads.
#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/result.h"

namespace fnmesh::broker {

// natsStatus as std::error_code (category "nats"; message = natsStatus_GetText).
std::error_code make_nats_error(natsStatus s) noexcept;

struct connect_options {
  std::string urls = "nats://127.0.0.1:4222";  // comma-separated list
  std::string name = "fnmesh";                 // client name shown by the server
  std::chrono::milliseconds timeout{2000};
  bool reconnect = true;                       // keep retrying after the first connect
};

class connection {
 public:
  // Fails with one clear line naming the URL(s) (error.message()) when nothing answers.
  static result<std::unique_ptr<connection>> connect(const connect_options& opts);
  ~connection();

  natsConnection* nats() const noexcept { return nc_; }
  jsCtx* js() const noexcept { return js_; }
  const std::string& urls() const noexcept { return urls_; }

  // Core NATS publish (no acknowledgement).
  result<void> publish(std::string_view subject, std::span<const uint8_t> data);
  // JetStream publishes fail at once with errc::unavailable while the connection is down
  // (nats.c reconnects by itself); they never wait for an ack that cannot come. Except in
  // a cluster, where another server takes over within seconds: there js_publish tries
  // again, with the same Nats-Msg-Id, for up to cluster_publish_patience.
  bool connected() const noexcept;
  // The servers this connection knows: those given and those the cluster announced.
  size_t known_servers() const noexcept;
  static constexpr std::chrono::seconds cluster_publish_patience{10};
  using headers = std::vector<std::pair<std::string, std::string>>;
  // JetStream publish, waits for the stream's ack. msg_id sets Nats-Msg-Id (dedup);
  // `extra` adds message headers.
  result<void> js_publish(std::string_view subject, std::span<const uint8_t> data,
                          std::string_view msg_id, const headers& extra = {});
  // JetStream publish without waiting; a failed publish is logged and counted.
  result<void> js_publish_async(std::string_view subject, std::span<const uint8_t> data,
                                std::string_view msg_id);
  // Async publishes that failed (server error or no ack in time), process-wide, for /metrics.
  static uint64_t async_publish_failures() noexcept;
  // Waits until every async publish is acked (or the timeout passes).
  result<void> js_publish_async_complete(std::chrono::milliseconds timeout);
  result<void> flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

  // Calls `fn` on nats.c's thread each time the connection is back, possibly on another
  // server: what lived only on the old one (waiting pull requests) is gone. Must not block.
  // Returns the listener's id for forget_reconnect(), which its owner calls before it dies.
  uint64_t on_reconnect(std::function<void()> fn);
  void forget_reconnect(uint64_t id);

 private:
  struct reconnect_listeners {
    std::mutex mutex;
    uint64_t next_id = 1;
    std::unordered_map<uint64_t, std::function<void()>> fns;
  };
  static void reconnected(natsConnection* nc, void* listeners) noexcept;
  result<void> js_publish_once(std::string_view subject, std::span<const uint8_t> data,
                               std::string_view msg_id, const headers& extra);
  connection(natsConnection* nc, jsCtx* js, std::string urls, std::unique_ptr<reconnect_listeners> l) noexcept
      : nc_(nc), js_(js), urls_(std::move(urls)), listeners_(std::move(l)) {}
  natsConnection* nc_;
  jsCtx* js_;
  std::string urls_;
  std::unique_ptr<reconnect_listeners> listeners_;  // nats.c's closure: outlives nc_
};

}  // namespace fnmesh::broker
