#pragma once
// server: the billing collector's ZeroMQ ROUTER, the mesh's internal plane (nodes and
// adapters, on loopback). Each message is [identity][one CollectorRequest]; a
// CompletionBatch is committed to the store before its BatchAck goes out; an
// ActivationQuery (the HTTP adapter's GET /invocations) is answered from the reader.
// Anything that fails verification (or has the wrong frame count) is dropped, counted
// and logged at most once a minute per peer. Between messages it clears outputs older
// than the retention. Owns the socket and its counters; uses the store and reader it is
// given; one thread, except the counters, which any thread may read.
#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/collector/reader.h"
#include "broker/collector/store.h"
#include "common/result.h"
#include "flatbuffers/proto.h"

namespace fnmesh::collector {

struct server_counters {
  std::atomic<uint64_t> requests = 0;     // verified requests answered
  std::atomic<uint64_t> batches = 0;      // CompletionBatches committed
  std::atomic<uint64_t> stored = 0;       // completions new to the store
  std::atomic<uint64_t> duplicates = 0;   // replayed completions ignored
  std::atomic<uint64_t> rejected = 0;     // completions without an id, result or usage
  std::atomic<uint64_t> malformed = 0;    // messages dropped: bad frame count or failed verification
  std::atomic<uint64_t> errors = 0;       // requests answered with an ErrorReply
  std::atomic<uint64_t> expired = 0;      // outputs cleared by the retention
};

class server {
 public:
  // Largest message the socket accepts at all (a peer sending more is disconnected by
  // ZeroMQ); anything over proto::max_message_bytes is dropped and counted.
  static constexpr int64_t socket_max_message_bytes = 4 * int64_t(proto::max_message_bytes);

  // Binds `endpoint` (tcp://host:port; port 0 or * = any free one). Fails with the errno
  // of the bind (EADDRINUSE when the port is taken).
  // `retention`: outputs of attempts that finished longer ago are cleared.
  static result<std::unique_ptr<server>> bind(zmq::context_t& ctx, store& db, reader& queries,
                                               const std::string& endpoint,
                                               std::chrono::nanoseconds retention);

  // The endpoint actually bound (the real port when 0 was asked for).
  const std::string& endpoint() const noexcept { return endpoint_; }
  const server_counters& counters() const noexcept { return counters_; }

  // Serves until `stop_fd` (a signalfd or eventfd) becomes readable.
  result<void> run(int stop_fd);

 private:
  server(zmq::socket_t socket, store& db, reader& queries, std::string endpoint,
         std::chrono::nanoseconds retention)
      : socket_(std::move(socket)), store_(db), reader_(queries),
        endpoint_(std::move(endpoint)), retention_(retention) {}
  void expire();
  result<void> drain();
  void handle(std::vector<zmq::message_t>& frames);
  void answer(const proto::CollectorRequest& request);
  void answer_batch(const proto::CompletionBatch& batch);
  void answer_activation(const proto::ActivationQuery& query);
  void answer_error(const std::string& message);
  void note_malformed(const std::string& source, size_t frames, size_t bytes);

  zmq::socket_t socket_;
  store& store_;
  reader& reader_;
  std::string endpoint_;
  std::chrono::nanoseconds retention_;
  int64_t next_expiry_ns_ = 0;  // monotonic
  server_counters counters_;
  flatbuffers::FlatBufferBuilder reply_;
  uint64_t request_id_ = 0;  // of the request being answered
  std::unordered_map<std::string, int64_t> malformed_logged_ns_;  // per peer
};

}  // namespace fnmesh::collector
