// fnmesh publish: a raw event on fnmesh.events.<subject>, stored by stream FNMESH_EVENTS.
#include <nats/nats.h>

#include <memory>

#include "broker/client/subjects.h"
#include "common/ulid.h"
#include "tools/cli.h"

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
