#include "broker/client/invocation_copy.h"

namespace fnmesh::broker {

namespace p = fnmesh::proto;

std::vector<uint8_t> copy_invocation(const p::Invocation& inv, const invocation_changes& changes) {
  flatbuffers::FlatBufferBuilder b(256 + (inv.payload() ? inv.payload()->size() : 0));
  auto str = [&b](const flatbuffers::String* s) { return s ? b.CreateString(s) : 0; };
  auto id = changes.id ? b.CreateString(*changes.id) : str(inv.id());
  auto tenant = str(inv.tenant()), function = str(inv.function()), version = str(inv.version());
  auto payload = inv.payload() ? b.CreateVector(inv.payload()->data(), inv.payload()->size()) : 0;
  auto content_type = str(inv.content_type()), source = str(inv.source());
  auto trace_id = str(inv.trace_id()), parent_id = str(inv.parent_id());
  flatbuffers::Offset<p::ReplyTo> reply = 0;
  if (const auto* r = inv.reply())
    reply = p::CreateReplyTo(b, str(r->endpoint()), r->correlation(), r->callback());
  p::InvocationBuilder ib(b);
  ib.add_id(id);
  ib.add_tenant(tenant);
  ib.add_function(function);
  ib.add_version(version);
  ib.add_payload(payload);
  ib.add_content_type(content_type);
  ib.add_trigger(inv.trigger());
  ib.add_source(source);
  ib.add_deadline_ns(inv.deadline_ns());
  ib.add_reply(reply);
  ib.add_attempt(changes.attempt);
  ib.add_trace_id(trace_id);
  ib.add_parent_id(parent_id);
  ib.add_published_ns(changes.published_ns.value_or(inv.published_ns()));
  b.Finish(ib.Finish());
  const auto out = p::bytes(b);
  return {out.begin(), out.end()};
}

}  // namespace fnmesh::broker
