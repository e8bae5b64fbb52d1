#pragma once
// pull_requests: a node's JetStream pull requests, sent as plain requests to
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> with replies on one inbox subscription,
// so any number of consumers are pulled with no thread per consumer and no polling.
// Owns that subscription and one sweeper thread; callbacks run on the nats.c delivery
// thread (ends of requests the server left unanswered: on the sweeper) and must not block.
#include <nats/nats.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "broker/client/connection.h"

namespace fnmesh::broker {

struct msg_deleter {
  void operator()(natsMsg* m) const noexcept { natsMsg_Destroy(m); }
};
using msg_ptr = std::unique_ptr<natsMsg, msg_deleter>;

// One message handed out by JetStream.
struct delivery {
  msg_ptr msg;
  uint64_t request_id = 0;
  std::string consumer;
  uint64_t delivered = 1;  // JetStream delivery count: the invocation's attempt
  uint64_t stream_seq = 0;

  std::span<const uint8_t> data() const noexcept;
  // Acknowledgements go to the message's reply subject (+ACK, -NAK, +WPI, +TERM).
  result<void> ack(connection& conn) const;
  // Redelivered at once, or once `delay` has passed.
  result<void> nak(connection& conn, std::chrono::nanoseconds delay = {}) const;
  result<void> in_progress(connection& conn) const;
  result<void> term(connection& conn) const;
};

class pull_requests {
 public:
  using delivery_handler = std::function<void(delivery&&)>;
  // A request ended: `undelivered` of its batch never came, so that much reserved
  // capacity is free again. `status` is the JetStream status code that ended it: 0 when
  // fully served, 408 expired, 404 nothing (no-wait), 409 consumer deleted / too many
  // waiting, 503 no responders (no such consumer or stream) — callers back off on 409/503 —
  // and `lost` when the server that held it is gone: the connection moved to another
  // server, or the consumer's leader changed (its waiting requests died with the old one).
  using end_handler =
      std::function<void(uint64_t request_id, uint32_t undelivered, int status)>;
  static constexpr int lost = -1;

  static result<std::unique_ptr<pull_requests>> open(connection& conn, std::string stream,
                                                     delivery_handler on_delivery,
                                                     end_handler on_end);
  ~pull_requests();

  // Asks `consumer` for up to `batch` messages, waiting at most `expires` on the server.
  // A delivered message names only its consumer, so it is attributed to that consumer's
  // waiting requests in the order the server serves them (oldest first, round robin while
  // a batch has room, as nats-server does); one that arrives after its request ended
  // locally has request_id 0. The server never answers a request for a missing consumer
  // or stream: such a request ends here, `expires` + 2 s later, with status 503.
  result<uint64_t> request(std::string_view consumer, uint32_t batch,
                           std::chrono::milliseconds expires);

  // Requests not yet ended (tests, metrics).
  size_t outstanding() const;

  // Drains the inbox subscription: messages already received are still handed out, then
  // the server sees no interest and drops this node's waiting requests (a draining node
  // must not keep taking work that other nodes could run).
  void stop();

 private:
  pull_requests() = default;
  static void on_message(natsConnection*, natsSubscription*, natsMsg*, void* self) noexcept;
  static void on_leader_elected(natsConnection*, natsSubscription*, natsMsg*, void* self) noexcept;
  // Ends every request (of `consumer`, or all when empty) with status `lost`.
  void lose(std::string_view consumer) noexcept;

  connection* conn_ = nullptr;
  std::string stream_;
  std::string inbox_prefix_;
  natsSubscription* sub_ = nullptr;
  natsSubscription* leader_sub_ = nullptr;  // consumer leader elections of stream_
  uint64_t reconnect_listener_ = 0;
  delivery_handler on_delivery_;
  end_handler on_end_;
  void sweep() noexcept;
  void end_request(uint64_t id, int status) noexcept;

  struct pending {
    std::string consumer;
    uint32_t remaining;
    int64_t give_up_ns;  // monotonic: the server said nothing by then
  };
  mutable std::mutex mutex_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, pending> pending_;
  // Per consumer: its waiting requests in the order the server serves them.
  std::unordered_map<std::string, std::deque<uint64_t>> order_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool sub_done_ = false;
  std::condition_variable sub_done_cv_;
  std::thread sweeper_;
};

}  // namespace fnmesh::broker
