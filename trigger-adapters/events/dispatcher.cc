#include "trigger-adapters/events/dispatcher.h"

#include <thread>

#include "common/errc.h"
#include "common/log.h"
#include "common/metrics_endpoint.h"
#include "broker/client/event_id.h"

namespace fnmesh::events_adapter {
namespace {

constexpr std::string_view events_prefix = "fnmesh.events.";
constexpr std::string_view events_filter = "fnmesh.events.>";

std::shared_ptr<spdlog::logger> log() { return logger("events"); }

struct msg_list {
  natsMsgList list{};
  ~msg_list() { natsMsgList_Destroy(&list); }
};

struct metadata {
  jsMsgMetaData* meta = nullptr;
  ~metadata() { jsMsgMetaData_Destroy(meta); }
};

// Creates the durable consumer, or leaves the existing one as it is.
result<void> ensure_consumer(broker::connection& conn, const std::string& durable,
                             std::chrono::seconds ack_wait) {
  jsConsumerInfo* info = nullptr;
  jsErrCode jerr{};
  const std::string stream(broker::events_stream);
  if (js_GetConsumerInfo(&info, conn.js(), stream.c_str(), durable.c_str(), nullptr, &jerr) ==
      NATS_OK) {
    jsConsumerInfo_Destroy(info);
    return {};
  }
  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.Durable = durable.c_str();
  cfg.AckPolicy = js_AckExplicit;
  cfg.DeliverPolicy = js_DeliverAll;
  cfg.AckWait = std::chrono::nanoseconds(ack_wait).count();
  cfg.FilterSubject = events_filter.data();
  natsStatus s = js_AddConsumer(&info, conn.js(), stream.c_str(), &cfg, nullptr, &jerr);
  if (s == NATS_OK) {
    jsConsumerInfo_Destroy(info);
    return {};
  }
  // Another instance may have created it in between.
  if (js_GetConsumerInfo(&info, conn.js(), stream.c_str(), durable.c_str(), nullptr, nullptr) ==
      NATS_OK) {
    jsConsumerInfo_Destroy(info);
    return {};
  }
  log()->error("cannot create consumer {} on stream {}: {} (is the stream bootstrapped?)",
               durable, stream, nats_GetLastError(nullptr));
  return fail(broker::make_nats_error(s));
}

}  // namespace

std::string durable_name(std::string_view tenant) {
  if (tenant == broker::default_tenant) return "events-adapter";
  return "events-adapter-" + std::string(tenant);
}

std::vector<broker::function_ptr> subscribers(std::span<const broker::function_ptr> all,
                                              std::string_view tenant,
                                              std::string_view subject) {
  std::vector<broker::function_ptr> out;
  for (const auto& fn : all) {
    if (!fn) continue;
    const auto& spec = fn->spec();
    auto spec_tenant = proto::view(spec.tenant());
    if (spec_tenant.empty()) spec_tenant = broker::default_tenant;
    if (spec_tenant != tenant) continue;
    const auto* triggers = spec.triggers();
    if (!triggers || !triggers->events()) continue;
    for (const auto* pattern : *triggers->events()) {
      if (broker::subject_matches(proto::view(pattern), subject)) {
        out.push_back(fn);
        break;
      }
    }
  }
  return out;
}

result<std::unique_ptr<dispatcher>> dispatcher::open(broker::connection& conn,
                                                     broker::function_registry& registry,
                                                     broker::invoker& invoker,
                                                     dispatcher_options opts) {
  if (!broker::valid_name(opts.tenant) || opts.remembered_events == 0)
    return fail(make_error_code(errc::invalid_argument));
  const std::string durable = durable_name(opts.tenant);
  if (auto ok = ensure_consumer(conn, durable, opts.ack_wait); !ok) return fail(ok.error());

  jsSubOptions so;
  jsSubOptions_Init(&so);
  const std::string stream(broker::events_stream);
  so.Stream = stream.c_str();
  so.Consumer = durable.c_str();
  so.ManualAck = true;
  natsSubscription* sub = nullptr;
  jsErrCode jerr{};
  natsStatus s = js_PullSubscribe(&sub, conn.js(), events_filter.data(), durable.c_str(), nullptr,
                                  &so, &jerr);
  if (s != NATS_OK) {
    log()->error("cannot bind to consumer {}: {}", durable, nats_GetLastError(nullptr));
    return fail(broker::make_nats_error(s));
  }
  log()->info("consuming {} through durable consumer {} for tenant {}", stream, durable,
              opts.tenant);
  return std::unique_ptr<dispatcher>(new dispatcher(conn, registry, invoker, std::move(opts), sub));
}

dispatcher::~dispatcher() {
  // Unsubscribing would delete nothing (the consumer is durable); just drop interest.
  natsSubscription_Destroy(sub_);
}

void dispatcher::stop() noexcept { stop_.store(true, std::memory_order_relaxed); }

void dispatcher::run() {
  uint64_t failures = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    msg_list batch;
    jsErrCode jerr{};
    natsStatus s = natsSubscription_Fetch(&batch.list, sub_, opts_.batch,
                                          opts_.fetch_wait.count(), &jerr);
    if (s == NATS_TIMEOUT) continue;
    if (s != NATS_OK) {
      counters_.fetch_failures.fetch_add(1, std::memory_order_relaxed);
      if (failures++ % 20 == 0)
        log()->warn("fetch from {} failed: {} (retrying)", broker::events_stream,
                    nats_GetLastError(nullptr));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    failures = 0;
    std::vector<uint64_t> acked;
    for (int i = 0; i < batch.list.Count; ++i) {
      natsMsg* msg = batch.list.Msgs[i];
      const auto d = dispatch(msg);
      if (d.ack) {
        if (natsMsg_Ack(msg, nullptr) == NATS_OK) acked.push_back(d.seq);
        counters_.events.fetch_add(1, std::memory_order_relaxed);
      } else {
        natsMsg_NakWithDelay(msg, 1000, nullptr);
        counters_.retried.fetch_add(1, std::memory_order_relaxed);
      }
    }
    // The acks are on their way; make sure the server has them before the next fetch so
    // that a restart right after does not see these events again. Until it has, a
    // redelivery must still find what is stored.
    if (auto ok = conn_.flush(); !ok) {
      log()->warn("flush after acks failed: {}", ok.error().message());
      continue;
    }
    for (uint64_t seq : acked) stored_.forget(seq);
  }
  log()->info("stopped: {} events, {} invocations, {} unmatched, {} refused, {} retried",
              counters_.events.load(), counters_.invocations.load(), counters_.unmatched.load(),
              counters_.refused.load(), counters_.retried.load());
}

std::string dispatcher::metrics() const {
  std::string out;
  auto counter = [&out](std::string_view name, std::string_view help,
                        const std::atomic<uint64_t>& value) {
    append_metric(out, "fnmesh_events_" + std::string(name) + "_total", "counter", help,
                  value.load(std::memory_order_relaxed));
  };
  counter("events", "Events handled and acked (unmatched ones included).", counters_.events);
  counter("invocations", "Invocations published, one per event per subscribed function.",
          counters_.invocations);
  counter("already_stored",
          "Invocations a redelivered event did not publish again: stored the first time.",
          counters_.already_stored);
  counter("unmatched", "Events no function of the tenant subscribes to.", counters_.unmatched);
  counter("refused", "Invocations refused for good (payload too large, function gone).",
          counters_.refused);
  counter("retried", "Events handed back for redelivery because a publish failed.",
          counters_.retried);
  counter("malformed", "Events without JetStream metadata (dropped).", counters_.malformed);
  counter("fetch_failures", "Fetches from stream FNMESH_EVENTS that failed (NATS unreachable).",
          counters_.fetch_failures);
  return out;
}

dispatcher::dispatched dispatcher::dispatch(natsMsg* msg) {
  std::string_view subject = natsMsg_GetSubject(msg);
  if (!subject.starts_with(events_prefix)) return {.ack = true};  // outside our filter
  const std::string_view event = subject.substr(events_prefix.size());

  metadata md;
  if (natsMsg_GetMetaData(&md.meta, msg) != NATS_OK) {
    counters_.malformed.fetch_add(1, std::memory_order_relaxed);
    log()->warn("event on {} has no JetStream metadata; dropped", subject);
    return {.ack = true};
  }
  const uint64_t seq = md.meta->Sequence.Stream;
  const int64_t stored_ns = md.meta->Timestamp;

  auto fns = subscribers(registry_.all(), opts_.tenant, event);
  if (fns.empty()) {
    counters_.unmatched.fetch_add(1, std::memory_order_relaxed);
    log()->debug("event #{} on {}: no subscriber", seq, subject);
    return {.ack = true, .seq = seq};
  }

  const char* content_type = nullptr;
  if (natsMsgHeader_Get(msg, "Content-Type", &content_type) != NATS_OK || !content_type ||
      !*content_type)
    content_type = "application/json";
  const auto* data = reinterpret_cast<const uint8_t*>(natsMsg_GetData(msg));
  const std::span<const uint8_t> payload(data, size_t(natsMsg_GetDataLength(msg)));

  bool all_done = true;
  for (const auto& fn : fns) {
    const auto& spec = fn->spec();
    broker::invocation_request req;
    req.tenant = opts_.tenant;
    req.function = std::string(proto::view(spec.name()));
    const std::string key = broker::function_key(req.tenant, req.function);
    if (stored_.contains(seq, key)) {
      counters_.already_stored.fetch_add(1, std::memory_order_relaxed);
      log()->debug("event #{} on {} -> {}: already stored", seq, subject, req.function);
      continue;
    }
    req.invocation_id = broker::event_invocation_id(stored_ns, seq, key);
    req.payload = payload;
    req.content_type = content_type;
    req.trigger = proto::Trigger::event;
    req.source = std::string(subject);
    // Waits for the stream's ack: the event is acked only once every invocation is stored.
    auto published = invoker_.invoke(req, /*async_publish=*/false);
    if (published) {
      stored_.add(seq, key);
      counters_.invocations.fetch_add(1, std::memory_order_relaxed);
      log()->debug("event #{} on {} -> {} ({})", seq, subject, req.function,
                   published->invocation_id);
      continue;
    }
    const auto ec = published.error();
    if (ec == errc::not_found || ec == errc::too_large || ec == errc::invalid_argument) {
      counters_.refused.fetch_add(1, std::memory_order_relaxed);
      log()->warn("event #{} on {} not delivered to {}: {}", seq, subject, req.function,
                  ec.message());
      continue;
    }
    log()->warn("event #{} on {}: publishing to {} failed: {} (will retry)", seq, subject,
                req.function, ec.message());
    all_done = false;
  }
  return {.ack = all_done, .seq = seq};
}

}  // namespace fnmesh::events_adapter
