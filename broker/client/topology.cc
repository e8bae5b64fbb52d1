#include "broker/client/topology.h"

#include <algorithm>
#include <string>

#include "broker/client/code_bundle.h"
#include "broker/client/subjects.h"
#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::broker {
namespace {

auto log() { return fnmesh::logger("topology"); }

constexpr int64_t ns_per_s = 1'000'000'000;
// A 6 MiB payload plus the Invocation envelope and headers.
constexpr int32_t max_stream_msg = 7 << 20;

result<void> add_stream(connection& conn, const char* name, const char* subject,
                        jsRetentionPolicy retention, int64_t max_age_ns, int replicas,
                        int64_t max_bytes = -1) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {subject};
  cfg.Name = name;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Retention = retention;
  cfg.Storage = js_FileStorage;
  cfg.Duplicates = 120 * ns_per_s;
  cfg.MaxAge = max_age_ns;
  cfg.MaxBytes = max_bytes;
  cfg.Discard = js_DiscardOld;
  cfg.MaxMsgSize = max_stream_msg;
  cfg.Replicas = replicas;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_AddStream(&si, conn.js(), &cfg, nullptr, &jerr);
  if (si) jsStreamInfo_Destroy(si);
  if (s == NATS_OK) return {};
  if (jerr == JSStreamNameExistErr) {
    log()->debug("stream {} exists with another configuration; left as it is", name);
    return {};
  }
  log()->error("cannot create stream {}: {} ({})", name, natsStatus_GetText(s),
               nats_GetLastError(nullptr));
  return fail(make_nats_error(s));
}

result<void> add_bucket(connection& conn, const char* name, int32_t max_value, int64_t ttl_ns,
                        int replicas) {
  kvConfig cfg;
  kvConfig_Init(&cfg);
  cfg.Bucket = name;
  cfg.History = 1;
  cfg.MaxValueSize = max_value;
  cfg.TTL = ttl_ns;
  cfg.StorageType = js_FileStorage;
  cfg.Replicas = replicas;
  kvStore* kv = nullptr;
  natsStatus s = js_CreateKeyValue(&kv, conn.js(), &cfg);
  if (s == NATS_OK) {
    kvStore_Destroy(kv);
    return {};
  }
  // Created before with another configuration: binding to it is enough.
  std::string last = nats_GetLastError(nullptr) ? nats_GetLastError(nullptr) : "";
  kv = nullptr;
  if (js_KeyValue(&kv, conn.js(), name) == NATS_OK) {
    kvStore_Destroy(kv);
    log()->debug("bucket {} exists ({}); left as it is", name, last);
    return {};
  }
  log()->error("cannot create bucket {}: {} ({})", name, natsStatus_GetText(s), last);
  return fail(make_nats_error(s));
}

std::string_view tenant_of(const proto::FunctionSpec& spec) {
  std::string_view t = proto::view(spec.tenant());
  return t.empty() ? default_tenant : t;
}

int replicas_for(connection& conn, const topology_options& opts) {
  if (opts.replicas > 0) return opts.replicas;
  return conn.known_servers() >= 3 ? 3 : 1;
}

}  // namespace

std::chrono::seconds ack_wait(const proto::FunctionSpec& spec, const topology_options& opts) {
  return std::min<std::chrono::seconds>(std::chrono::seconds(spec.timeout_s()) + opts.ack_grace,
                                        max_ack_wait);
}

result<void> bootstrap(connection& conn, const topology_options& opts) {
  const int r = replicas_for(conn, opts);
  std::string invoke(invoke_stream), events(events_stream), dlq(dlq_stream), logs(logs_stream);
  if (auto s = add_stream(conn, invoke.c_str(), "fnmesh.invoke.>", js_WorkQueuePolicy, 0, r); !s)
    return s;
  if (auto s = add_stream(conn, events.c_str(), "fnmesh.events.>", js_LimitsPolicy,
                          24 * 3600 * ns_per_s, r);
      !s)
    return s;
  if (auto s = add_stream(conn, dlq.c_str(), "fnmesh.dlq.>", js_LimitsPolicy,
                          7 * 24 * 3600 * ns_per_s, r);
      !s)
    return s;
  if (auto s = add_stream(conn, logs.c_str(), "fnmesh.logs.>", js_LimitsPolicy,
                          24 * 3600 * ns_per_s, r, int64_t(256) << 20);
      !s)
    return s;
  std::string functions(functions_bucket), code(code_bucket), nodes(nodes_bucket);
  if (auto s = add_bucket(conn, functions.c_str(), 1 << 20, 0, r); !s) return s;
  if (auto s = add_bucket(conn, code.c_str(), int32_t(chunk_bytes + (64 << 10)), 0, r); !s)
    return s;
  if (auto s = add_bucket(conn, nodes.c_str(), 64 << 10, 15 * ns_per_s, r); !s) return s;
  return {};
}

result<void> ensure_function_consumer(connection& conn, const proto::FunctionSpec& spec,
                                      const topology_options& opts) {
  std::string_view tenant = tenant_of(spec), function = proto::view(spec.name());
  if (!valid_name(tenant) || !valid_name(function)) return fail(errc::invalid_argument);
  const std::string stream(invoke_stream), name = consumer_name(tenant, function),
                    subject = invoke_subject(tenant, function);

  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.Durable = name.c_str();
  cfg.FilterSubject = subject.c_str();
  cfg.DeliverPolicy = js_DeliverAll;
  cfg.AckPolicy = js_AckExplicit;
  cfg.AckWait = ack_wait(spec, opts).count() * ns_per_s;
  cfg.MaxDeliver = -1;
  cfg.MaxAckPending = spec.concurrency() > 0 ? int64_t(spec.concurrency()) : 10000;
  cfg.MaxWaiting = 512;
  cfg.Replicas = opts.replicas;  // 0: the stream's

  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetConsumerInfo(&ci, conn.js(), stream.c_str(), name.c_str(), nullptr, &jerr);
  if (s == NATS_OK && ci) {
    const jsConsumerConfig* have = ci->Config;
    bool same = have && have->AckWait == cfg.AckWait && have->MaxDeliver == cfg.MaxDeliver &&
                have->MaxAckPending == cfg.MaxAckPending;
    jsConsumerInfo_Destroy(ci);
    if (same) return {};
    jsConsumerInfo* updated = nullptr;
    s = js_UpdateConsumer(&updated, conn.js(), stream.c_str(), &cfg, nullptr, &jerr);
    if (updated) jsConsumerInfo_Destroy(updated);
    if (s != NATS_OK) {
      log()->error("cannot update consumer {}: {} ({})", name, natsStatus_GetText(s),
                   nats_GetLastError(nullptr));
      return fail(make_nats_error(s));
    }
    log()->info("consumer {} updated", name);
    return {};
  }
  if (ci) jsConsumerInfo_Destroy(ci);
  jsConsumerInfo* added = nullptr;
  s = js_AddConsumer(&added, conn.js(), stream.c_str(), &cfg, nullptr, &jerr);
  if (added) jsConsumerInfo_Destroy(added);
  if (s != NATS_OK) {
    log()->error("cannot create consumer {}: {} ({})", name, natsStatus_GetText(s),
                 nats_GetLastError(nullptr));
    return fail(make_nats_error(s));
  }
  log()->info("consumer {} created", name);
  return {};
}

result<void> remove_function_consumer(connection& conn, std::string_view tenant,
                                      std::string_view function) {
  const std::string stream(invoke_stream), name = consumer_name(tenant, function);
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_DeleteConsumer(conn.js(), stream.c_str(), name.c_str(), nullptr, &jerr);
  if (s == NATS_OK || s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr) return {};
  return fail(make_nats_error(s));
}

}  // namespace fnmesh::broker
