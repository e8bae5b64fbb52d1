#include "node/reporter.h"

#include <stdexcept>

#include "broker/client/collector_client.h"
#include "common/log.h"
#include "flatbuffers/proto.h"

namespace fnmesh::node {

namespace {

spool open_spool(const std::filesystem::path& dir) {
  auto s = spool::open(dir);
  if (!s) throw std::runtime_error("cannot open spool " + dir.string() + ": " + s.error().message());
  return std::move(*s);
}

std::unique_ptr<broker::collector_client> connect_collector(zmq::context_t& ctx,
                                                            const std::string& endpoint) {
  try {
    return std::make_unique<broker::collector_client>(ctx, endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("bad collector endpoint '" + endpoint + "': " + e.what() +
                             " (expected tcp://HOST:PORT)");
  }
}

// Room left in a CompletionBatch for everything but the completions themselves.
constexpr size_t batch_overhead_bytes = 64 * 1024;

}  // namespace

reporter::reporter(zmq::context_t& ctx, reporter_options opts)
    : opts_(std::move(opts)),
      collector_(connect_collector(ctx, opts_.collector)),
      spool_(open_spool(opts_.spool_dir)) {
  if (spool_.last_seq() > spool_.acked_seq())
    logger("node")->info("spool holds {} completions not yet acked by the collector; resending",
                         spool_.last_seq() - spool_.acked_seq());
  thread_ = std::thread([this] { run(); });
}

reporter::~reporter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

result<uint64_t> reporter::record(const encoder& encode) {
  result<uint64_t> seq;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    seq = spool_.append(encode(spool_.next_seq()));
    // The reporter needs a wake-up for the first record of a batch and a full batch only.
    const uint64_t pending = spool_.last_seq() - spool_.acked_seq();
    wake = pending == 1 || pending == opts_.batch_records;
  }
  if (wake) changed_.notify_all();
  return seq;
}

uint64_t reporter::unacked() const {
  std::lock_guard lock(mutex_);
  return spool_.last_seq() - spool_.acked_seq();
}

bool reporter::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return spool_.acked_seq() >= spool_.last_seq(); });
}

void reporter::run() {
  auto log = logger("node");
  auto& collector = *collector_;
  uint64_t request_id = 0;
  bool warned = false;
  for (;;) {
    std::vector<spooled> records;
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::milliseconds(500),
                        [&] { return stopping_ || spool_.last_seq() > spool_.acked_seq(); });
      if (stopping_) return;
      // Let a batch gather for a moment: one collector commit for many completions.
      changed_.wait_for(lock, opts_.linger, [&] {
        return stopping_ || spool_.last_seq() - spool_.acked_seq() >= opts_.batch_records;
      });
      if (stopping_) return;
      auto read = spool_.read_after(spool_.acked_seq(), opts_.batch_records);
      if (!read) {
        log->error("spool read failed: {}", read.error().message());
        continue;
      }
      records = std::move(*read);
    }
    // A batch must stay under the collector's message limit: outputs can be MiBs each.
    size_t bytes = 0, fits = 0;
    while (fits < records.size() &&
           (fits == 0 || bytes + records[fits].bytes.size() + batch_overhead_bytes <=
                             proto::max_message_bytes))
      bytes += records[fits++].bytes.size();
    records.resize(fits);
    if (records.empty()) continue;

    flatbuffers::FlatBufferBuilder b(64 * 1024);
    std::vector<flatbuffers::Offset<proto::SpooledCompletion>> items;
    items.reserve(records.size());
    for (const auto& r : records)
      items.push_back(proto::CreateSpooledCompletion(b, r.seq, b.CreateVector(r.bytes)));
    auto batch = proto::CreateCompletionBatch(b, b.CreateString(opts_.node_id), b.CreateVector(items));
    b.Finish(proto::CreateCollectorRequest(b, ++request_id, proto::RequestBody::CompletionBatch,
                                           batch.Union()));
    if (!collector.send(proto::bytes(b))) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    const uint64_t last = records.back().seq;
    const auto deadline = std::chrono::steady_clock::now() + opts_.ack_timeout;
    bool acked = false;
    while (!acked && std::chrono::steady_clock::now() < deadline) {
      auto reply = collector.receive(std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now()));
      if (!reply) break;
      const auto* ack = reply->get().body_as_BatchAck();
      if (!ack) continue;
      std::lock_guard lock(mutex_);
      if (ack->last_seq() > spool_.acked_seq()) {
        if (auto ok = spool_.ack(std::min(ack->last_seq(), spool_.last_seq())); !ok)
          log->error("spool ack failed: {}", ok.error().message());
      }
      acked = ack->last_seq() >= last;
    }
    changed_.notify_all();
    if (!acked && !warned) {
      log->warn("collector at {} did not ack; completions stay in the spool and are resent",
                opts_.collector);
      warned = true;
    } else if (acked) {
      warned = false;
    }
  }
}

}  // namespace fnmesh::node
