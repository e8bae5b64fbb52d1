#pragma once
// server: the billing collector's ZeroMQ ROUTER. Each message is [identity][one
// CollectorRequest]; a CompletionBatch is committed to the store before its BatchAck
// goes out, queries are answered from the store. Anything that fails verification (or
// has the wrong frame count) is dropped, counted and logged at most once a minute per
// peer. Owns the socket and its counters; uses the store it is given; one thread.
#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/collector/store.h"
#include "common/result.h"
#include "flatbuffers/proto.h"

namespace fnmesh::collector {

struct server_counters {
  uint64_t requests = 0;     // verified requests answered
  uint64_t batches = 0;      // CompletionBatches committed
  uint64_t stored = 0;       // completions new to the store
  uint64_t duplicates = 0;   // replayed completions ignored
  uint64_t rejected = 0;     // completions without an id, result or usage
  uint64_t malformed = 0;    // messages dropped: bad frame count or failed verification
  uint64_t errors = 0;       // requests answered with an ErrorReply
};

class server {
 public:
  // Largest message the socket accepts at all (a peer sending more is disconnected by
  // ZeroMQ); anything over proto::max_message_bytes is dropped and counted.
  static constexpr int64_t socket_max_message_bytes = 4 * int64_t(proto::max_message_bytes);

  // Binds `endpoint` (tcp://host:port; port 0 or * = any free one). Fails with the errno
  // of the bind (EADDRINUSE when the port is taken).
  static result<std::unique_ptr<server>> bind(zmq::context_t& ctx, store& db,
                                               const std::string& endpoint);

  // The endpoint actually bound (the real port when 0 was asked for).
  const std::string& endpoint() const noexcept { return endpoint_; }
  const server_counters& counters() const noexcept { return counters_; }

  // Serves until `stop_fd` (a signalfd or eventfd) becomes readable.
  result<void> run(int stop_fd);
  // Serves whatever arrives within `timeout`, then returns.
  result<void> poll_once(std::chrono::milliseconds timeout);

 private:
  server(zmq::socket_t socket, store& db, std::string endpoint)
      : socket_(std::move(socket)), store_(db), endpoint_(std::move(endpoint)) {}
  result<void> drain();
  void handle(std::vector<zmq::message_t>& frames);
  void answer(const proto::CollectorRequest& request);
  void answer_batch(const proto::CompletionBatch& batch);
  void answer_usage(const proto::UsageQuery& query);
  void answer_activation(const proto::ActivationQuery& query);
  void answer_error(const std::string& message);
  void note_malformed(const std::string& source, size_t frames, size_t bytes);

  zmq::socket_t socket_;
  store& store_;
  std::string endpoint_;
  server_counters counters_;
  flatbuffers::FlatBufferBuilder reply_;
  uint64_t request_id_ = 0;  // of the request being answered
  std::unordered_map<std::string, int64_t> malformed_logged_ns_;  // per peer
};

}  // namespace fnmesh::collector
