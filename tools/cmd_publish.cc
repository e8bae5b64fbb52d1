// fnmesh publish: a raw event on fnmesh.events.<subject>, stored by stream FNMESH_EVENTS.
#include <nats/nats.h>

#include <algorithm>
#include <memory>

#include "broker/client/subjects.h"
#include "common/ulid.h"
#include "flatbuffers/proto.h"
#include "tools/cli.h"
#include "broker/client/event_id.h"

namespace fnmesh::cli {
namespace {

struct publish_options {
  std::string subject;
  std::string data;
  std::string file;
};

struct pub_ack_deleter {
  void operator()(jsPubAck* a) const noexcept { jsPubAck_Destroy(a); }
};
struct msg_deleter {
  void operator()(natsMsg* m) const noexcept { natsMsg_Destroy(m); }
};

// The functions of the default tenant that subscribe to `subject`, with the invocation id
// the events adapter gives each (derived from the stored event, so it is known here too).
void print_subscribers(broker::connection& conn, std::string_view subject,
                       uint64_t seq) {
  natsMsg* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  if (js_GetMsg(&raw, conn.js(), std::string(broker::events_stream).c_str(), seq, nullptr, &jerr) != NATS_OK)
    return;
  std::unique_ptr<natsMsg, msg_deleter> stored(raw);
  const int64_t stored_ns = natsMsg_GetTime(stored.get());
  auto functions = broker::kv_bucket::open(conn, broker::functions_bucket);
  if (!functions) return;
  auto keys = (*functions)->keys();
  if (!keys) return;
  std::sort(keys->begin(), keys->end());
  bool any = false;
  for (const auto& key : *keys) {
    auto value = (*functions)->get(key);
    if (!value || !value->has_value()) continue;
    const auto* spec = proto::verified<proto::FunctionSpec>(**value);
    if (!spec || proto::view(spec->tenant()) != broker::default_tenant || !spec->triggers() ||
        !spec->triggers()->events())
      continue;
    bool match = false;
    for (const auto* pattern : *spec->triggers()->events())
      match = match || broker::subject_matches(proto::view(pattern), subject);
    if (!match) continue;
    any = true;
    const std::string name(proto::view(spec->name()));
    std::printf("  invokes %s: %s\n", name.c_str(),
                broker::event_invocation_id(stored_ns, seq, broker::function_key(broker::default_tenant, name))
                    .c_str());
  }
  if (!any) std::printf("  no deployed function subscribes to %.*s\n", int(subject.size()), subject.data());
}

// Tokens separated by '.', none empty, no wildcards or spaces.
bool valid_subject(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' || s.find("..") != s.npos) return false;
  return s.find_first_of(" \t\r\n*>") == std::string_view::npos;
}

int run_publish(const context& ctx, const publish_options& o) {
  if (!valid_subject(o.subject))
    return fail("bad subject \"" + o.subject + "\": tokens separated by '.', no spaces or wildcards");
  std::string data = o.data;
  if (!o.file.empty()) {
    auto text = read_file(o.file);
    if (!text) return fail("cannot read " + o.file);
    data = std::move(*text);
  }
  const broker::limits lim;
  if (data.size() > lim.async_payload)
    return fail("event too large: " + std::to_string(data.size()) + " bytes, the limit is " +
                std::to_string(lim.async_payload) + " bytes");

  auto conn = ctx.connect();
  if (!conn) return 1;
  const std::string subject = broker::event_subject(o.subject);
  const std::string msg_id = new_ulid();
  jsPubOptions opts;
  jsPubOptions_Init(&opts);
  opts.MsgId = msg_id.c_str();
  jsPubAck* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  const natsStatus s = js_Publish(&raw, conn->js(), subject.c_str(), data.data(), int(data.size()), &opts, &jerr);
  std::unique_ptr<jsPubAck, pub_ack_deleter> ack(raw);
  if (s == NATS_NO_RESPONDERS)
    return fail("no stream stores " + subject + " on " + conn->urls() + " (start the mesh with `fnmesh up`)");
  if (s != NATS_OK) return fail("cannot publish " + subject + ": " + nats_GetLastError(nullptr));
  std::printf("published %s: stream %s seq %llu\n", subject.c_str(), ack->Stream,
              static_cast<unsigned long long>(ack->Sequence));
  print_subscribers(*conn, o.subject, ack->Sequence);
  return 0;
}

}  // namespace

void add_publish_command(CLI::App& app, context& ctx, command_list& out) {
  auto o = std::make_shared<publish_options>();
  auto* cmd = app.add_subcommand("publish", "publish an event on fnmesh.events.<subject>: every subscribed function runs once");
  cmd->add_option("subject", o->subject, "subject after fnmesh.events. (e.g. orders.created)")->required();
  auto* data = cmd->add_option("data", o->data, "event payload");
  cmd->add_option("--file,-f", o->file, "payload from a file")->excludes(data);
  out.push_back({cmd, [&ctx, o] { return run_publish(ctx, *o); }});
}

}  // namespace fnmesh::cli
