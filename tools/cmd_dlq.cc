// fnmesh dlq ls|show|redrive|purge: the invocations that failed for good, as nodes store
// them in stream FNMESH_DLQ (subject fnmesh.dlq.<tenant>.<function>, the Invocation as
// payload, the failure in Fnmesh-* headers; plan/issue7-api.md). Listing reads headers
// only through an ephemeral pull consumer that is deleted on exit; one message is read,
// redriven and deleted by its stream sequence.
#include <nats/nats.h>

#include <charconv>
#include <cstdlib>
#include <deque>
#include <map>

#include "broker/client/event_id.h"
#include "broker/client/invoker.h"
#include "broker/client/pull_requests.h"
#include "broker/client/subjects.h"
#include "common/base64.h"
#include "common/clock.h"
#include "common/errc.h"
#include "common/ulid.h"
#include "flatbuffers/proto.h"
#include "tools/cli.h"

namespace fnmesh::cli {
namespace {

using json = nlohmann::json;

struct dlq_options {
  std::string tenant = std::string(broker::default_tenant);
  std::string function;              // only this function's dead letters
  bool all = false;                  // every function of the tenant
  size_t limit = 100;                // ls: the newest N, 0 = all
  std::vector<std::string> targets;  // show, redrive: stream sequences or invocation ids
  bool json = false;
};

// One dead letter as its subject and headers describe it.
struct dead_letter {
  uint64_t seq = 0;
  int64_t stored_ns = 0;  // when FNMESH_DLQ stored it
  std::string tenant, function, id, status, error, node;
  int64_t attempts = -1;  // -1: no Fnmesh-Attempts header
  int64_t failed_ns = 0;
  int64_t failed_or_stored_ns() const { return failed_ns > 0 ? failed_ns : stored_ns; }
};

// A seq or id the user gave, and the sequence it names (0: none stored).
struct target {
  std::string text;
  uint64_t seq = 0;
};

const std::string stream(broker::dlq_stream);
constexpr size_t table_error_chars = 60;

// fail() where the caller wants to know whether it worked.
bool refused(std::string_view message) {
  fail(message);
  return false;
}

std::string ago(int64_t unix_ns) { return human_duration_ns(std::max<int64_t>(0, unix_now_ns() - unix_ns)) + " ago"; }

std::string header(natsMsg* m, const char* name) {
  const char* v = nullptr;
  return natsMsgHeader_Get(m, name, &v) == NATS_OK && v ? v : "";
}

std::optional<int64_t> number(std::string_view text) {
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

std::span<const uint8_t> data_of(natsMsg* m) {
  return {reinterpret_cast<const uint8_t*>(natsMsg_GetData(m)), size_t(natsMsg_GetDataLength(m))};
}

dead_letter letter_of(natsMsg* m, uint64_t seq, int64_t stored_ns) {
  dead_letter d{.seq = seq, .stored_ns = stored_ns};
  std::string_view subject = natsMsg_GetSubject(m);  // fnmesh.dlq.<tenant>.<function>
  subject.remove_prefix(std::min(subject.size(), std::string_view("fnmesh.dlq.").size()));
  const size_t dot = subject.find('.');
  d.tenant = subject.substr(0, dot);
  d.function = dot == subject.npos ? "" : subject.substr(dot + 1);
  d.id = header(m, "Nats-Msg-Id");
  d.status = header(m, "Fnmesh-Status");
  d.error = header(m, "Fnmesh-Error");
  d.node = header(m, "Fnmesh-Node");
  d.attempts = number(header(m, "Fnmesh-Attempts")).value_or(-1);
  d.failed_ns = number(header(m, "Fnmesh-Failed-Ns")).value_or(0);
  return d;
}

json json_of(const dead_letter& d) {
  const int64_t failed = d.failed_or_stored_ns();
  return {{"seq", d.seq},           {"id", d.id},         {"tenant", d.tenant},
          {"function", d.function}, {"status", d.status}, {"attempts", d.attempts},
          {"error", d.error},       {"node", d.node},     {"failed_ns", failed},
          {"failed", rfc3339_ms(failed)}, {"stored_ns", d.stored_ns}};
}

std::string dump(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace); }

// The subjects a selection covers: one function's, or every function's of the tenant.
std::string filter_of(const dlq_options& o) {
  return broker::dlq_subject(o.tenant, o.function.empty() ? "*" : o.function);
}

// Calls `visit` with the dead letters on `filter`, oldest first, from their headers: as
// many as were stored when it began. False once it printed why it could not.
bool scan(broker::connection& conn, const std::string& filter, const std::function<void(dead_letter&&)>& visit) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.AckPolicy = js_AckNone;
  so.Config.HeadersOnly = true;
  so.Config.MemoryStorage = true;
  so.Config.Replicas = 1;
  natsSubscription* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_PullSubscribe(&raw, conn.js(), filter.c_str(), nullptr, nullptr, &so, &jerr);
  if (jerr == JSStreamNotFoundErr)
    return refused("no stream " + stream + " on " + conn.urls() + " (start the mesh with `fnmesh up`)");
  if (s != NATS_OK) return refused("cannot read " + stream + " on " + conn.urls() + ": " + why(s));
  subscription sub(raw);
  jsConsumerInfo* info = nullptr;
  if (s = natsSubscription_GetConsumerInfo(&info, sub.get(), nullptr, &jerr); s != NATS_OK)
    return refused("cannot read " + stream + " on " + conn.urls() + ": " + why(s));
  uint64_t left = info->NumPending;
  jsConsumerInfo_Destroy(info);

  while (left > 0) {
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = int(std::min<uint64_t>(left, 1024));
    req.NoWait = true;
    req.Expires = 2'000'000'000;
    natsMsgList list{};
    s = natsSubscription_FetchRequest(&list, sub.get(), &req);
    if (s == NATS_NOT_FOUND || s == NATS_TIMEOUT) break;  // purged or deleted meanwhile
    if (s != NATS_OK) return refused("reading " + stream + ": " + why(s));
    left -= std::min<uint64_t>(left, uint64_t(list.Count));
    for (int i = 0; i < list.Count; ++i) {
      jsMsgMetaData* meta = nullptr;
      if (natsMsg_GetMetaData(&meta, list.Msgs[i]) != NATS_OK) continue;
      visit(letter_of(list.Msgs[i], meta->Sequence.Stream, meta->Timestamp));
      jsMsgMetaData_Destroy(meta);
    }
    natsMsgList_Destroy(&list);
  }
  return true;
}

bool is_seq(std::string_view text) { return !text.empty() && text.find_first_not_of("0123456789") == text.npos; }

// Checks the syntax of each seq or id before anything connects.
std::optional<std::string> bad_target(const std::vector<std::string>& targets) {
  for (const auto& t : targets)
    if (!(is_seq(t) && number(t).value_or(0) > 0) && !is_ulid(t))
      return "not a DLQ sequence number or invocation id: " + t + " (`fnmesh dlq ls` lists both)";
  return std::nullopt;
}

// The sequence each target names; ids are looked up in one scan of the tenant's dead
// letters (the newest with that id wins). False once it printed why it could not.
bool resolve(broker::connection& conn, const dlq_options& o, std::vector<target>& out) {
  std::map<std::string, uint64_t> by_id;
  if (std::any_of(o.targets.begin(), o.targets.end(), [](const auto& t) { return !is_seq(t); }) &&
      !scan(conn, broker::dlq_subject(o.tenant, "*"), [&](dead_letter&& d) { by_id[d.id] = d.seq; }))
    return false;
  for (const auto& t : o.targets) {
    const auto found = by_id.find(t);
    out.push_back({t, is_seq(t) ? uint64_t(*number(t)) : found == by_id.end() ? 0 : found->second});
  }
  return true;
}

// The stored dead letter `t` names, if it is one of `tenant`'s; else prints that there is
// none and returns nullptr.
broker::msg_ptr get(broker::connection& conn, const std::string& tenant, const target& t) {
  const auto none = [&] {
    fail("no DLQ message " + t.text + " (tenant " + tenant + "; `fnmesh dlq ls` lists them)");
    return nullptr;
  };
  if (t.seq == 0) return none();
  natsMsg* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  const natsStatus s = js_GetMsg(&raw, conn.js(), stream.c_str(), t.seq, nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) return none();
  if (jerr == JSStreamNotFoundErr) {
    fail("no stream " + stream + " on " + conn.urls() + " (start the mesh with `fnmesh up`)");
    return nullptr;
  }
  if (s != NATS_OK) {
    fail("cannot read " + stream + " message " + std::to_string(t.seq) + ": " + why(s));
    return nullptr;
  }
  broker::msg_ptr m(raw);
  if (!natsMsg_GetSubject(raw) || !broker::subject_matches(broker::dlq_subject(tenant, "*"), natsMsg_GetSubject(raw)))
    return none();
  return m;
}

// Printable as it is: valid UTF-8 without control characters other than tab and newlines.
bool is_text(std::span<const uint8_t> b) {
  for (size_t i = 0; i < b.size();) {
    const uint8_t c = b[i];
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > b.size()) return false;
    if (n == 1 && c < 0x20 && c != '\t' && c != '\n' && c != '\r') return false;
    if (c == 0x7f) return false;
    for (size_t k = 1; k < n; ++k)
      if ((b[i + k] & 0xc0) != 0x80) return false;
    i += n;
  }
  return true;
}

// At most `chars` bytes, cut at a character boundary, with an ellipsis when cut.
std::string truncated(const std::string& s, size_t chars) {
  if (s.size() <= chars) return s;
  size_t n = chars;
  while (n > 0 && (uint8_t(s[n]) & 0xc0) == 0x80) --n;
  return s.substr(0, n) + "…";
}

int check_names(const dlq_options& o) {
  if (!broker::valid_name(o.tenant))
    return fail("bad tenant name: " + o.tenant + " (names are [a-z0-9][a-z0-9-]{0,62})");
  if (!o.function.empty() && !broker::valid_name(o.function))
    return fail("bad function name: " + o.function + " (names are [a-z0-9][a-z0-9-]{0,62})");
  return 0;
}

int run_ls(const context& ctx, const dlq_options& o) {
  if (check_names(o)) return 1;
  auto conn = ctx.connect();
  if (!conn) return 1;
  std::deque<dead_letter> last;
  if (!scan(*conn, filter_of(o), [&](dead_letter&& d) {
        last.push_back(std::move(d));
        if (o.limit > 0 && last.size() > o.limit) last.pop_front();
      }))
    return 1;
  if (o.json) {
    json rows = json::array();
    for (const auto& d : last) rows.push_back(json_of(d));
    std::printf("%s\n", dump(rows).c_str());
    return 0;
  }
  if (last.empty()) {
    std::printf("no dead letters (tenant %s%s)\n", o.tenant.c_str(),
                o.function.empty() ? "" : (", function " + o.function).c_str());
    return 0;
  }
  table t({"SEQ", "ID", "FUNCTION", "STATUS", "ATTEMPTS", "FAILED", "ERROR"});
  for (const auto& d : last)
    t.add({std::to_string(d.seq), d.id.empty() ? "-" : d.id, d.function, d.status.empty() ? "-" : d.status,
           d.attempts < 0 ? "-" : std::to_string(d.attempts), ago(d.failed_or_stored_ns()),
           d.error.empty() ? "-" : truncated(d.error, table_error_chars)});
  t.print();
  return 0;
}

int run_show(const context& ctx, const dlq_options& o) {
  if (check_names(o)) return 1;
  if (auto bad = bad_target(o.targets)) return fail(*bad);
  auto conn = ctx.connect();
  if (!conn) return 1;
  std::vector<target> targets;
  if (!resolve(*conn, o, targets)) return 1;
  auto m = get(*conn, o.tenant, targets.at(0));
  if (!m) return 1;
  const dead_letter d = letter_of(m.get(), natsMsg_GetSequence(m.get()), natsMsg_GetTime(m.get()));
  const auto* inv = proto::verified<proto::Invocation>(data_of(m.get()));
  const auto payload = inv ? proto::bytes(inv->payload()) : data_of(m.get());
  const bool text = is_text(payload);

  std::vector<std::pair<std::string, std::string>> headers;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(m.get(), &keys, &count) == NATS_OK) {
    for (int i = 0; i < count; ++i) headers.emplace_back(keys[i], header(m.get(), keys[i]));
    std::free(keys);  // the array only: the strings are the message's
  }
  const std::string subject = natsMsg_GetSubject(m.get());
  const std::string shown = text ? std::string(proto::text(payload)) : base64(payload);
  if (o.json) {
    json j = json_of(d);
    j["subject"] = subject;
    j["headers"] = json::object();
    for (const auto& [k, v] : headers) j["headers"][k] = v;
    j["invocation"] = inv ? json{{"id", proto::view(inv->id())},
                                 {"version", proto::view(inv->version())},
                                 {"content_type", proto::view(inv->content_type())},
                                 {"trigger", proto::trigger_name(inv->trigger())},
                                 {"source", proto::view(inv->source())},
                                 {"attempt", inv->attempt()},
                                 {"published_ns", inv->published_ns()},
                                 {"parent_id", proto::view(inv->parent_id())},
                                 {"callback", inv->reply() && inv->reply()->callback()}}
                          : json(nullptr);
    j["payload_encoding"] = text ? "text" : "base64";
    j["payload"] = shown;
    std::printf("%s\n", dump(j).c_str());
    return 0;
  }

  std::string out;
  const auto line = [&out](std::string_view key, std::string_view value) {
    out.append(key).append(std::string(14 - key.size(), ' ')).append(value).append("\n");
  };
  line("seq", std::to_string(d.seq) + " (" + subject + ", stored " + rfc3339_ms(d.stored_ns) + ")");
  line("id", d.id);
  line("function", d.tenant + "/" + d.function);
  line("status", d.status);
  line("attempts", d.attempts < 0 ? "-" : std::to_string(d.attempts));
  line("failed", rfc3339_ms(d.failed_or_stored_ns()) + " (" + ago(d.failed_or_stored_ns()) + ") on " +
                     (d.node.empty() ? "-" : d.node));
  line("error", d.error);
  if (inv) {
    line("version", proto::view(inv->version()));
    const std::string source(proto::view(inv->source()));
    line("trigger", proto::trigger_name(inv->trigger()) + (source.empty() ? "" : " " + source));
    line("published", rfc3339_ms(inv->published_ns()));
    line("content_type", proto::view(inv->content_type()));
  } else {
    line("invocation", "(the payload is not an Invocation)");
  }
  out.append("headers\n");
  for (const auto& [k, v] : headers) out.append("  ").append(k).append(": ").append(v).append("\n");
  line("payload", (text ? "" : "(binary, base64) ") + shown);
  std::fwrite(out.data(), 1, out.size(), stdout);  // the payload may hold any character
  return 0;
}

// Republishes the dead letter `t` names as a new invocation (the invoker rings the
// function's doorbell) and deletes it, printing "<old id> -> <new id>". False once it
// printed why it stays.
bool redrive_one(broker::connection& conn, broker::invoker& invoker, const std::string& tenant, const target& t) {
  auto m = get(conn, tenant, t);
  if (!m) return false;
  const dead_letter d = letter_of(m.get(), natsMsg_GetSequence(m.get()), natsMsg_GetTime(m.get()));
  const std::string seq = std::to_string(d.seq);
  const auto* inv = proto::verified<proto::Invocation>(data_of(m.get()));
  if (!inv)
    return refused("DLQ message " + seq + " is not an Invocation; left in the DLQ (`fnmesh dlq purge` removes it)");
  const std::string old_id = d.id.empty() ? std::string(proto::view(inv->id())) : d.id;

  broker::invocation_request req;
  // Derived from the stored message, so a redrive repeated after a failed delete publishes
  // the same id and FNMESH_INVOKE's duplicate window drops the copy.
  req.invocation_id = broker::event_invocation_id(d.stored_ns, d.seq, old_id);
  req.tenant = d.tenant;
  req.function = d.function;
  req.payload = proto::bytes(inv->payload());
  req.content_type = proto::view(inv->content_type());
  req.trigger = inv->trigger();
  req.source = proto::view(inv->source());
  req.parent_id = proto::view(inv->parent_id());
  if (inv->reply() && inv->reply()->callback()) {  // the result still goes to the callback's edge
    req.reply_endpoint = proto::view(inv->reply()->endpoint());
    req.correlation = inv->reply()->correlation();
    req.callback = true;
  }
  auto sent = invoker.invoke(req);
  if (!sent) {
    const bool gone = sent.error() == errc::not_found;
    return refused("cannot redrive DLQ message " + seq + " (" + old_id + "): " +
                   (gone ? "no_such_function: " + d.function + " (tenant " + d.tenant + "; deploy it first)"
                         : sent.error().message()) +
                   "; it stays in the DLQ");
  }
  jsErrCode jerr = jsErrCode(0);
  if (const natsStatus s = js_DeleteMsg(conn.js(), stream.c_str(), d.seq, nullptr, &jerr); s != NATS_OK)
    return refused("published " + sent->invocation_id + " but could not delete DLQ message " + seq + ": " + why(s) +
                   " (redrive it again within 2 minutes: the same id is published and deduplicated)");
  std::printf("%s -> %s\n", old_id.c_str(), sent->invocation_id.c_str());
  return true;
}

int run_redrive(const context& ctx, const dlq_options& o) {
  if (check_names(o)) return 1;
  if (!o.function.empty() && o.all) return fail("redrive: --function and --all exclude each other");
  const bool selector = !o.function.empty() || o.all;
  if (o.targets.empty() && !selector) return fail("redrive needs <seq|id> ..., --function F or --all");
  if (!o.targets.empty() && selector) return fail("redrive: give <seq|id> ... or --function/--all, not both");
  if (auto bad = bad_target(o.targets)) return fail(*bad);
  auto conn = ctx.connect();
  if (!conn) return 1;
  std::vector<target> targets;
  if (o.targets.empty()) {
    if (!scan(*conn, filter_of(o), [&](dead_letter&& d) { targets.push_back({std::to_string(d.seq), d.seq}); }))
      return 1;
  } else if (!resolve(*conn, o, targets)) {
    return 1;
  }
  if (targets.empty()) {
    std::printf("nothing to redrive (tenant %s%s)\n", o.tenant.c_str(),
                o.function.empty() ? "" : (", function " + o.function).c_str());
    return 0;
  }
  broker::invoker invoker(*conn, nullptr);
  size_t done = 0;
  for (const auto& t : targets) done += redrive_one(*conn, invoker, o.tenant, t);
  std::printf("redriven %zu of %zu dead letter(s)\n", done, targets.size());
  return done == targets.size() ? 0 : 1;
}

int run_purge(const context& ctx, const dlq_options& o) {
  if (check_names(o)) return 1;
  if (!o.function.empty() && o.all) return fail("purge: --function and --all exclude each other");
  if (o.function.empty() && !o.all) return fail("purge needs --function F or --all (it deletes what they select)");
  auto conn = ctx.connect();
  if (!conn) return 1;
  const std::string filter = filter_of(o);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetStreamInfo(&si, conn->js(), stream.c_str(), &jo, &jerr);
  if (jerr == JSStreamNotFoundErr)
    return fail("no stream " + stream + " on " + conn->urls() + " (start the mesh with `fnmesh up`)");
  if (s != NATS_OK) return fail("cannot read " + stream + " on " + conn->urls() + ": " + why(s));
  uint64_t count = 0;
  if (si->State.Subjects)
    for (int i = 0; i < si->State.Subjects->Count; ++i) count += si->State.Subjects->List[i].Msgs;
  jsStreamInfo_Destroy(si);

  jsOptions_Init(&jo);
  jo.Stream.Purge.Subject = filter.c_str();
  if (s = js_PurgeStream(conn->js(), stream.c_str(), &jo, &jerr); s != NATS_OK)
    return fail("cannot purge " + stream + " (" + filter + "): " + why(s));
  std::printf("purged %llu dead letter(s) (tenant %s%s)\n", static_cast<unsigned long long>(count), o.tenant.c_str(),
              o.function.empty() ? "" : (", function " + o.function).c_str());
  return 0;
}

void add_tenant(CLI::App* cmd, dlq_options& o) {
  cmd->add_option("--tenant", o.tenant, "tenant")->capture_default_str();
}

}  // namespace

void add_dlq_commands(CLI::App& app, context& ctx, command_list& out) {
  auto* dlq = app.add_subcommand("dlq", "the dead-letter queue: invocations that failed for good");
  dlq->require_subcommand(1);
  dlq->footer(
      "Nodes dead-letter an async invocation after its last failed attempt, when it waited\n"
      "longer than the function's max_event_age, or for no_such_function / rejected. Stream\n"
      "FNMESH_DLQ keeps them 7 days.");

  auto lo = std::make_shared<dlq_options>();
  auto* ls = dlq->add_subcommand("ls", "list dead letters, oldest first (the newest last)");
  add_tenant(ls, *lo);
  ls->add_option("--function", lo->function, "only this function's");
  ls->add_option("--limit", lo->limit, "the newest N (0: all)")->capture_default_str();
  ls->add_flag("--json", lo->json, "print JSON (the error in full)");
  ls->footer(
      "Columns: SEQ (the DLQ stream sequence), ID (the invocation id), FUNCTION, STATUS (error,\n"
      "timeout, out_of_memory, cpu_limit, crashed, rejected, no_such_function or expired),\n"
      "ATTEMPTS (that ran), FAILED (how long ago), ERROR (cut at 60 bytes; `show` or --json\n"
      "print it whole).");
  out.push_back({ls, [&ctx, lo] { return run_ls(ctx, *lo); }});

  auto so = std::make_shared<dlq_options>();
  auto* show = dlq->add_subcommand("show", "one dead letter: its headers, invocation and payload");
  show->add_option("target", so->targets, "DLQ sequence number or invocation id")->required()->expected(1);
  add_tenant(show, *so);
  show->add_flag("--json", so->json, "print JSON");
  show->footer("The payload is printed as text when it is UTF-8, else as base64.");
  out.push_back({show, [&ctx, so] { return run_show(ctx, *so); }});

  auto ro = std::make_shared<dlq_options>();
  auto* redrive = dlq->add_subcommand("redrive", "run dead letters again, as new invocations");
  redrive->add_option("targets", ro->targets, "DLQ sequence numbers or invocation ids");
  add_tenant(redrive, *ro);
  redrive->add_option("--function", ro->function, "every dead letter of this function");
  redrive->add_flag("--all", ro->all, "every dead letter of the tenant");
  redrive->footer(
      "Each is published to FNMESH_INVOKE as a new invocation (attempt 1, published now, the\n"
      "function's current version; same payload, content type, trigger, source and callback),\n"
      "then deleted from the DLQ; prints `<old id> -> <new id>` for each and a summary. The\n"
      "new id derives from the DLQ sequence and the old id, so repeating a redrive whose\n"
      "delete failed publishes the same id, which FNMESH_INVOKE deduplicates (2 minutes).\n"
      "A function that is no longer deployed is refused and its dead letters stay. Exit 1\n"
      "when any stays.");
  out.push_back({redrive, [&ctx, ro] { return run_redrive(ctx, *ro); }});

  auto po = std::make_shared<dlq_options>();
  auto* purge = dlq->add_subcommand("purge", "delete dead letters (needs --function or --all)");
  add_tenant(purge, *po);
  purge->add_option("--function", po->function, "every dead letter of this function");
  purge->add_flag("--all", po->all, "every dead letter of the tenant");
  out.push_back({purge, [&ctx, po] { return run_purge(ctx, *po); }});
}

}  // namespace fnmesh::cli
