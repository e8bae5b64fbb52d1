// fnmesh logs: a function's stdout/stderr lines as stream FNMESH_LOGS stores them, read
// through an ephemeral pull consumer filtered to fnmesh.logs.<tenant>.<function>; with
// -f it keeps fetching until SIGINT or SIGTERM (exit 0).
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>

#include <deque>
#include <memory>

#include "broker/client/subjects.h"
#include "common/clock.h"
#include "flatbuffers/proto.h"
#include "tools/cli.h"

namespace fnmesh::cli {
namespace {

using json = nlohmann::json;

struct logs_options {
  std::string function;
  std::string tenant = std::string(broker::default_tenant);
  bool follow = false;
  size_t lines = 100;
  std::string since = "all";
  bool json = false;
};

// SIGINT and SIGTERM, blocked in every thread (nats.c's included: a handler interrupting
// its poll() would break the connection) and taken by the follow loop.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

bool stop_requested(const sigset_t& set) {
  const timespec now{};
  return ::sigtimedwait(&set, nullptr, &now) > 0;
}

// Prints one stored message; false when it is not a LogLine.
bool print_line(std::span<const uint8_t> data, bool as_json) {
  const auto* l = proto::verified<proto::LogLine>(data);
  if (!l) return false;
  const char* stream = proto::EnumNameLogStream(l->stream());
  const std::string_view invocation = proto::view(l->invocation_id()), line = proto::view(l->line());
  if (as_json) {
    const json j = {{"time", rfc3339_ms(l->time_ns())},
                    {"time_ns", l->time_ns()},
                    {"tenant", proto::view(l->tenant())},
                    {"function", proto::view(l->function())},
                    {"version", proto::view(l->version())},
                    {"invocation_id", invocation},
                    {"node_id", proto::view(l->node_id())},
                    {"sandbox", proto::view(l->sandbox())},
                    {"stream", stream},
                    {"line", line}};
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    std::string text = rfc3339_ms(l->time_ns());
    text.append(" ").append(invocation.empty() ? "-" : invocation).append(" ").append(stream);
    text.append(" ").append(line).append("\n");
    std::fwrite(text.data(), 1, text.size(), stdout);  // the line may hold any byte
  }
  return true;
}

std::span<const uint8_t> data_of(natsMsg* m) {
  return {reinterpret_cast<const uint8_t*>(natsMsg_GetData(m)), size_t(natsMsg_GetDataLength(m))};
}

// Up to `batch` lines: with no_wait and an expiry, the server answers as soon as it has
// delivered what is stored, or waits up to wait_ms for the first new line. Nothing coming
// is NATS_OK with an empty list.
natsStatus fetch(natsSubscription* sub, int batch, int64_t wait_ms, natsMsgList& out) {
  jsFetchRequest req;
  jsFetchRequest_Init(&req);
  req.Batch = batch;
  req.NoWait = true;
  req.Expires = wait_ms * 1'000'000;
  const natsStatus s = natsSubscription_FetchRequest(&out, sub, &req);
  return s == NATS_NOT_FOUND || s == NATS_TIMEOUT ? NATS_OK : s;
}

int run_logs(const context& ctx, const logs_options& o) {
  int64_t since_ns = 0;
  if (o.since != "all") {
    const auto ago = parse_duration_ns(o.since);
    if (!ago) return fail("--since: expected a duration like 90s, 10m, 1h, 2d or all, got " + o.since);
    since_ns = unix_now_ns() - *ago;
  }
  if (!broker::valid_name(o.function) || !broker::valid_name(o.tenant))
    return fail("no_such_function: " + o.function + " (names are [a-z0-9][a-z0-9-]{0,62})");

  const sigset_t stop = stop_signals();
  if (o.follow) ::pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before nats.c starts threads
  auto conn = ctx.connect();
  if (!conn) return 1;
  auto functions = ctx.open_bucket(*conn, broker::functions_bucket);
  if (!functions) return 1;
  auto spec = functions->get(broker::function_key(o.tenant, o.function));
  if (!spec) return fail("cannot read the spec of " + o.function + ": " + spec.error().message());
  if (!spec->has_value())
    return fail("no_such_function: " + o.function + " (tenant " + o.tenant +
                "; `fnmesh ls` lists the deployed functions)");

  const std::string stream(broker::logs_stream), subject = broker::logs_subject(o.tenant, o.function);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.AckPolicy = js_AckNone;
  so.Config.MemoryStorage = true;
  so.Config.Replicas = 1;
  if (o.lines == 0) {
    so.Config.DeliverPolicy = js_DeliverNew;
  } else if (since_ns > 0) {
    so.Config.DeliverPolicy = js_DeliverByStartTime;
    so.Config.OptStartTime = since_ns;
  }
  natsSubscription* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_PullSubscribe(&raw, conn->js(), subject.c_str(), nullptr, nullptr, &so, &jerr);
  if (jerr == JSStreamNotFoundErr)
    return fail("no stream " + stream + " on " + conn->urls() + " (start the mesh with `fnmesh up`)");
  if (s != NATS_OK) return fail("cannot read " + stream + " on " + conn->urls() + ": " + why(s));
  subscription sub(raw);

  // The lines stored when the consumer was made: nothing is delivered before a fetch.
  jsConsumerInfo* info = nullptr;
  if (s = natsSubscription_GetConsumerInfo(&info, sub.get(), nullptr, &jerr); s != NATS_OK)
    return fail("cannot read " + stream + " on " + conn->urls() + ": " + why(s));
  uint64_t stored = info->NumPending;
  jsConsumerInfo_Destroy(info);

  uint64_t malformed = 0;
  std::deque<std::string> last;  // the newest o.lines messages
  while (stored > 0) {
    natsMsgList list{};
    if (s = fetch(sub.get(), int(std::min<uint64_t>(stored, 1024)), 2000, list); s != NATS_OK)
      return fail("reading " + stream + ": " + why(s));
    if (list.Count == 0) break;  // aged out meanwhile
    stored -= std::min<uint64_t>(stored, uint64_t(list.Count));
    for (int i = 0; i < list.Count; ++i) {
      const auto data = data_of(list.Msgs[i]);
      last.emplace_back(reinterpret_cast<const char*>(data.data()), data.size());
      if (last.size() > o.lines) last.pop_front();
    }
    natsMsgList_Destroy(&list);
  }
  for (const auto& m : last)
    malformed += !print_line({reinterpret_cast<const uint8_t*>(m.data()), m.size()}, o.json);
  std::fflush(stdout);

  if (o.follow) {
    while (!stop_requested(stop)) {  // checked twice a second when no line comes
      natsMsgList list{};
      if (s = fetch(sub.get(), 256, 500, list); s != NATS_OK)
        return fail("reading " + stream + ": " + why(s));
      for (int i = 0; i < list.Count; ++i) malformed += !print_line(data_of(list.Msgs[i]), o.json);
      natsMsgList_Destroy(&list);
      std::fflush(stdout);
    }
  }
  if (malformed > 0)
    std::fprintf(stderr, "fnmesh: skipped %llu stored message(s) that are not log lines\n",
                 static_cast<unsigned long long>(malformed));
  return 0;
}

}  // namespace

void add_logs_command(CLI::App& app, context& ctx, command_list& out) {
  auto o = std::make_shared<logs_options>();
  auto* cmd = app.add_subcommand("logs", "print a function's stdout/stderr lines (-f: and follow new ones)");
  cmd->add_option("function", o->function, "function name")->required();
  cmd->add_option("--tenant", o->tenant, "tenant")->capture_default_str();
  cmd->add_flag("--follow,-f", o->follow, "keep printing new lines until Ctrl-C or SIGTERM");
  cmd->add_option("--lines,-n", o->lines, "how many of the newest stored lines to print first")
      ->capture_default_str();
  cmd->add_option("--since", o->since, "only lines younger than this (90s, 10m, 1h, 2d) or all")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "one JSON object per line");
  cmd->footer(
      "Each line: <time, RFC 3339 UTC> <invocation id, '-' outside an invocation> <stdout|stderr> <text>.\n"
      "Stream FNMESH_LOGS keeps 24 h of lines (256 MiB at most, oldest dropped first); a node\n"
      "drops a function's lines above 1000 lines/s and cuts lines at 16 KiB.");
  out.push_back({cmd, [&ctx, o] { return run_logs(ctx, *o); }});
}

}  // namespace fnmesh::cli
