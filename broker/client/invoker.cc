#include "broker/client/invoker.h"

#include <cstring>

#include "broker/client/pull_requests.h"
#include "common/clock.h"
#include "common/errc.h"
#include "common/log.h"
#include "common/ulid.h"

namespace fnmesh::broker {
namespace {

auto log() { return fnmesh::logger("invoker"); }

// The spec of one function read straight from the KV bucket's stream (one request, no
// bucket handle to keep).
result<std::vector<uint8_t>> read_spec(connection& conn, std::string_view tenant,
                                       std::string_view function) {
  const std::string stream = "KV_" + std::string(functions_bucket);
  const std::string subject =
      "$KV." + std::string(functions_bucket) + "." + function_key(tenant, function);
  natsMsg* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetLastMsg(&raw, conn.js(), stream.c_str(), subject.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND) return fail(errc::not_found);
  if (s != NATS_OK) return fail(make_nats_error(s));
  msg_ptr msg(raw);
  const char* op = nullptr;
  if (natsMsgHeader_Get(raw, "KV-Operation", &op) == NATS_OK && op &&
      (std::strcmp(op, "DEL") == 0 || std::strcmp(op, "PURGE") == 0))
    return fail(errc::not_found);
  const auto* data = reinterpret_cast<const uint8_t*>(natsMsg_GetData(raw));
  return std::vector<uint8_t>(data, data + natsMsg_GetDataLength(raw));
}

}  // namespace

invoker::invoker(connection& conn, function_registry* registry, limits lim)
    : conn_(conn), registry_(registry), limits_(lim) {}

result<published> invoker::invoke(const invocation_request& req, bool async_publish) {
  if (!valid_name(req.tenant) || !valid_name(req.function)) return fail(errc::invalid_argument);

  const bool sync = req.reply_endpoint.has_value() && !req.callback;
  const size_t limit = sync ? limits_.sync_payload : limits_.async_payload;
  if (req.payload.size() > limit) {
    log()->info("{}.{}: payload of {} bytes refused ({} limit: {} bytes)", req.tenant,
                req.function, req.payload.size(), sync ? "sync" : "async", limit);
    return fail(errc::too_large);
  }

  function_ptr record;
  std::vector<uint8_t> spec_buffer;
  const proto::FunctionSpec* spec = nullptr;
  if (registry_) {
    record = registry_->find(req.tenant, req.function);
    if (!record) return fail(errc::not_found);
    spec = &record->spec();
  } else {
    auto read = read_spec(conn_, req.tenant, req.function);
    if (!read) return fail(read.error());
    spec_buffer = std::move(*read);
    spec = proto::verified<proto::FunctionSpec>(spec_buffer);
    if (!spec) {
      log()->warn("{}.{}: stored spec is not a valid FunctionSpec", req.tenant, req.function);
      return fail(errc::not_found);
    }
  }

  const std::string id = req.invocation_id.empty() ? new_ulid() : req.invocation_id;
  const int64_t now = unix_now_ns();
  flatbuffers::FlatBufferBuilder b(req.payload.size() + 512);
  auto id_off = b.CreateString(id);
  auto tenant_off = b.CreateString(req.tenant);
  auto function_off = b.CreateString(req.function);
  auto version_off = b.CreateString(proto::view(spec->version()));
  auto payload_off = b.CreateVector(req.payload.data(), req.payload.size());
  auto content_type_off = b.CreateString(req.content_type);
  auto source_off = b.CreateString(req.source);
  auto trace_off = b.CreateString(id);
  auto parent_off = b.CreateString(req.parent_id);
  flatbuffers::Offset<proto::ReplyTo> reply_off;
  if (req.reply_endpoint)
    reply_off = proto::CreateReplyTo(b, b.CreateString(*req.reply_endpoint), req.correlation,
                                     req.callback);
  proto::InvocationBuilder ib(b);
  ib.add_id(id_off);
  ib.add_tenant(tenant_off);
  ib.add_function(function_off);
  ib.add_version(version_off);
  ib.add_payload(payload_off);
  ib.add_content_type(content_type_off);
  ib.add_trigger(req.trigger);
  ib.add_source(source_off);
  // A sync caller stops waiting after the timeout; an async invocation may wait in the
  // queue, so its timeout counts from its start (deadline 0).
  if (sync) ib.add_deadline_ns(now + int64_t(spec->timeout_s()) * 1'000'000'000);
  if (req.reply_endpoint) ib.add_reply(reply_off);
  ib.add_trace_id(trace_off);
  ib.add_parent_id(parent_off);
  ib.add_published_ns(now);
  ib.add_attempt(1);  // a node retries a failed async attempt by publishing attempt + 1
  b.Finish(ib.Finish());

  const std::string subject = invoke_subject(req.tenant, req.function);
  auto sent = async_publish ? conn_.js_publish_async(subject, proto::bytes(b), id)
                            : conn_.js_publish(subject, proto::bytes(b), id);
  if (!sent) return fail(sent.error());
  // The doorbell: a node with room but no idle sandbox of this function learns of it at
  // once (an idle sandbox anywhere already has it). Best effort: nodes also read pending counts.
  (void)conn_.publish(doorbell_subject(req.tenant, req.function), {});
  return published{id};
}

}  // namespace fnmesh::broker
