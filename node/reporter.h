#pragma once
// reporter: the node's side of billing. Owns the spool (every Completion is appended
// before the invocation is acked) and a thread that ships unacked records to the
// collector in batches, dropping them only after the collector's BatchAck (sent after
// its SQLite commit). Collector down or node restarted: records wait in the spool and are
// resent; the collector ignores replays. record() is thread-safe.
#include <zmq.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "broker/client/collector_client.h"
#include "common/result.h"
#include "node/spool/spool.h"

namespace fnmesh::node {

struct reporter_options {
  std::string node_id;
  std::string collector;                     // tcp://127.0.0.1:7700
  std::filesystem::path spool_dir;
  size_t batch_records = 512;
  std::chrono::milliseconds linger{5};       // a batch waits this long to fill
  std::chrono::milliseconds ack_timeout{2000};
};

class reporter {
 public:
  // Throws with one clear line if the spool can't open or the endpoint is malformed.
  reporter(zmq::context_t& ctx, reporter_options opts);
  ~reporter();

  // Appends the Completion that encode(seq) builds (seq = the record's spool sequence).
  using encoder = std::function<std::span<const uint8_t>(uint64_t seq)>;
  result<uint64_t> record(const encoder& encode);

  // Waits until every record is acked or the timeout passes; true when all are.
  bool flush(std::chrono::milliseconds timeout);
  uint64_t unacked() const;

 private:
  void run();

  reporter_options opts_;
  std::unique_ptr<broker::collector_client> collector_;  // used by thread_ only
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  spool spool_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace fnmesh::node
