#include "broker/collector/server.h"

#include <zmq.h>

#include "common/clock.h"
#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::collector {
namespace {

constexpr int64_t malformed_log_interval_ns = 60'000'000'000;
constexpr size_t max_messages_per_round = 1024;
constexpr auto expiry_interval = std::chrono::seconds(1);

std::error_code from_zmq(const zmq::error_t& e) {
  if (e.num() == ETERM) return errc::closed;
  return {e.num(), std::system_category()};
}

// Who sent a message: the peer's address when ZeroMQ knows it, else its identity in hex.
std::string source_of(std::vector<zmq::message_t>& frames) {
  for (auto& f : frames) {
    const char* peer = zmq_msg_gets(f.handle(), "Peer-Address");
    if (peer) return peer;
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string id = "identity:";
  if (!frames.empty())
    for (uint8_t b : std::span(frames[0].data<uint8_t>(), frames[0].size())) {
      id += hex[b >> 4];
      id += hex[b & 15];
    }
  return id;
}

}  // namespace

result<std::unique_ptr<server>> server::bind(zmq::context_t& ctx, store& db, reader& queries,
                                             const std::string& endpoint,
                                             std::chrono::nanoseconds retention) {
  try {
    zmq::socket_t s(ctx, zmq::socket_type::router);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::maxmsgsize, socket_max_message_bytes);
    s.bind(endpoint);
    std::string bound = s.get(zmq::sockopt::last_endpoint);
    return std::unique_ptr<server>(
        new server(std::move(s), db, queries, std::move(bound), retention));
  } catch (const zmq::error_t& e) {
    return fail(from_zmq(e));
  }
}

result<void> server::run(int stop_fd) {
  for (;;) {
    expire();
    std::array<zmq::pollitem_t, 2> items{zmq::pollitem_t{socket_.handle(), 0, ZMQ_POLLIN, 0},
                                         zmq::pollitem_t{nullptr, stop_fd, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items.data(), items.size(), expiry_interval);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return fail(from_zmq(e));
    }
    if (items[1].revents & ZMQ_POLLIN) return {};
    if (items[0].revents & ZMQ_POLLIN)
      if (auto r = drain(); !r) return r;
  }
}

// At most once a second; a failure is logged and retried then.
void server::expire() {
  const int64_t now = mono_now_ns();
  if (now < next_expiry_ns_) return;
  next_expiry_ns_ = now + std::chrono::nanoseconds(expiry_interval).count();
  auto cleared = store_.expire_outputs(unix_now_ns() - retention_.count());
  if (!cleared) {
    logger("collector")->warn("clearing expired outputs failed: {} ({})",
                              cleared.error().message(), store_.last_error());
    return;
  }
  counters_.expired += *cleared;
}

result<void> server::drain() {
  try {
    for (size_t n = 0; n < max_messages_per_round; ++n) {
      std::vector<zmq::message_t> frames(1);
      if (!socket_.recv(frames[0], zmq::recv_flags::dontwait)) return {};
      while (frames.back().more()) {
        frames.emplace_back();
        if (!socket_.recv(frames.back(), zmq::recv_flags::none)) break;
      }
      handle(frames);
    }
  } catch (const zmq::error_t& e) {
    return fail(from_zmq(e));
  }
  return {};
}

void server::handle(std::vector<zmq::message_t>& frames) {
  const proto::CollectorRequest* request = nullptr;
  size_t bytes = 0;
  for (auto& f : frames) bytes += f.size();
  if (frames.size() == 2)
    request = proto::verified<proto::CollectorRequest>(
        std::span<const uint8_t>(frames[1].data<uint8_t>(), frames[1].size()));
  if (!request) {
    note_malformed(source_of(frames), frames.size(), bytes);
    return;
  }
  ++counters_.requests;
  reply_.Clear();
  request_id_ = request->request_id();
  answer(*request);
  // Never blocks: a peer that went away or stopped reading just misses its reply (a
  // node resends its batch, a CLI times out).
  zmq::message_t reply(reply_.GetBufferPointer(), reply_.GetSize());
  if (!socket_.send(frames[0], zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return;
  (void)socket_.send(reply, zmq::send_flags::dontwait);
}

void server::answer(const proto::CollectorRequest& request) {
  switch (request.body_type()) {
    case proto::RequestBody::CompletionBatch:
      return answer_batch(*request.body_as_CompletionBatch());
    case proto::RequestBody::ActivationQuery:
      return answer_activation(*request.body_as_ActivationQuery());
    default:
      return answer_error("unknown request type");
  }
}

void server::answer_batch(const proto::CompletionBatch& batch) {
  auto outcome = store_.ingest(batch);
  if (!outcome) {
    logger("collector")->error("storing a batch from node {} failed: {} ({})",
                               proto::view(batch.node_id()), outcome.error().message(),
                               store_.last_error());
    return answer_error("store failed: " + outcome.error().message());
  }
  ++counters_.batches;
  counters_.stored += outcome->stored;
  counters_.duplicates += outcome->duplicates;
  counters_.rejected += outcome->rejected;
  if (outcome->rejected)
    logger("collector")->warn("node {}: {} completions without id, result or usage ignored",
                              proto::view(batch.node_id()), outcome->rejected);
  auto ack = proto::CreateBatchAck(reply_, reply_.CreateString(batch.node_id()),
                                   outcome->last_seq, outcome->stored, outcome->duplicates);
  reply_.Finish(proto::CreateCollectorReply(reply_, request_id_, proto::ReplyBody::BatchAck,
                                            ack.Union()));
}

void server::answer_activation(const proto::ActivationQuery& query) {
  auto attempts = reader_.activation(proto::view(query.invocation_id()));
  if (!attempts) return answer_error("activation query failed: " + attempts.error().message());
  auto& b = reply_;
  std::vector<flatbuffers::Offset<proto::Completion>> out;
  for (const auto& a : *attempts) {
    proto::Timings timings(a.queued_ns, a.started_ns, a.finished_ns);
    auto result = proto::CreateResult(
        b, b.CreateString(a.invocation_id), a.status, b.CreateVector(a.output),
        b.CreateString(a.error), b.CreateString(a.node_id), a.cold_start, &timings, a.attempt,
        0, b.CreateString(a.content_type));
    auto usage = proto::CreateUsage(
        b, b.CreateString(a.invocation_id), a.attempt, b.CreateString(a.tenant),
        b.CreateString(a.function), b.CreateString(a.node_id), a.node_seq, a.wall_ns,
        a.cpu_user_ns, a.cpu_system_ns, a.peak_memory_bytes, a.memory_limit_bytes,
        a.net_rx_bytes, a.net_tx_bytes, a.cold_start, a.billed_ms, a.source, a.trigger);
    out.push_back(proto::CreateCompletion(b, result, usage));
  }
  auto report = proto::CreateActivationReport(b, b.CreateVector(out));
  b.Finish(proto::CreateCollectorReply(b, request_id_, proto::ReplyBody::ActivationReport,
                                       report.Union()));
}

void server::answer_error(const std::string& message) {
  ++counters_.errors;
  reply_.Clear();  // drop anything half-built
  auto err = proto::CreateErrorReply(reply_, reply_.CreateString(message));
  reply_.Finish(proto::CreateCollectorReply(reply_, request_id_, proto::ReplyBody::ErrorReply,
                                            err.Union()));
}

void server::note_malformed(const std::string& source, size_t frames, size_t bytes) {
  ++counters_.malformed;
  const int64_t now = mono_now_ns();
  if (malformed_logged_ns_.size() > 4096) malformed_logged_ns_.clear();
  auto [it, first] = malformed_logged_ns_.try_emplace(source, now);
  if (!first && now - it->second < malformed_log_interval_ns) return;
  it->second = now;
  logger("collector")
      ->warn("dropped a malformed message from {} ({} frames, {} bytes); {} dropped so far",
             source, frames, bytes, counters_.malformed);
}

}  // namespace fnmesh::collector
