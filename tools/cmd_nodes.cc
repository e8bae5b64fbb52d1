// fnmesh nodes: the nodes whose heartbeat is in KV FNMESH_NODES (membership, no coordinator).
#include "broker/client/subjects.h"
#include "common/clock.h"
#include "flatbuffers/proto.h"
#include "tools/cli.h"

namespace fnmesh::cli {
namespace {

using json = nlohmann::json;

std::string pairs_text(const flatbuffers::Vector<flatbuffers::Offset<proto::KeyValue>>* v) {
  std::string out;
  if (v)
    for (const auto* kv : *v)
      out += (out.empty() ? "" : ",") + std::string(proto::view(kv->key())) + "=" + std::string(proto::view(kv->value()));
  return out.empty() ? "-" : out;
}

int run_nodes(const context& ctx, bool as_json) {
  auto conn = ctx.connect();
  if (!conn) return 1;
  auto nodes = ctx.open_bucket(*conn, broker::nodes_bucket);
  if (!nodes) return 1;
  auto keys = nodes->keys();
  if (!keys) return fail("cannot list " + std::string(broker::nodes_bucket) + ": " + keys.error().message());
  std::sort(keys->begin(), keys->end());
  table t({"NODE", "SLOTS", "RUNNING", "MEMORY", "WARM", "LABELS", "LAST_SEEN"});
  json rows = json::array();
  const int64_t now = unix_now_ns();
  for (const auto& key : *keys) {
    auto value = nodes->get(key);
    if (!value || !value->has_value()) continue;
    const auto* h = proto::verified<proto::Heartbeat>(**value);
    if (!h) continue;
    const int64_t age = std::max<int64_t>(0, now - h->sent_ns());
    rows.push_back({{"node_id", proto::view(h->node_id())},
                    {"slots", h->slots()},
                    {"running", h->running()},
                    {"memory_bytes", h->memory_bytes()},
                    {"warm", pairs_text(h->warm())},
                    {"labels", pairs_text(h->labels())},
                    {"collector", proto::view(h->collector())},
                    {"sent_ns", h->sent_ns()}});
    t.add({std::string(proto::view(h->node_id())), std::to_string(h->slots()), std::to_string(h->running()),
           std::to_string(h->memory_bytes() >> 20) + " MB", pairs_text(h->warm()), pairs_text(h->labels()),
           human_duration_ns(age) + " ago"});
  }
  if (as_json) std::printf("%s\n", rows.dump(2).c_str());
  else if (rows.empty()) std::printf("no nodes (none has sent a heartbeat lately)\n");
  else t.print();
  return 0;
}

}  // namespace

void add_nodes_command(CLI::App& app, context& ctx, command_list& out) {
  auto as_json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("nodes", "the nodes of the mesh (from their heartbeats)");
  cmd->add_flag("--json", *as_json, "print JSON");
  out.push_back({cmd, [&ctx, as_json] { return run_nodes(ctx, *as_json); }});
}

}  // namespace fnmesh::cli
