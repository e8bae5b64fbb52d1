// fnmesh deploy | ls | rm: the functions in KV FNMESH_FUNCTIONS and their code bundles.
#include "broker/client/code_bundle.h"
#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "tools/cli.h"
#include "tools/manifest.h"

namespace fnmesh::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

int run_deploy(const context& ctx, const std::string& folder_arg) {
  const fs::path folder(folder_arg);
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return fail(folder_arg + ": not a folder");
  const fs::path manifest_path = manifest::find_in_folder(folder);
  if (!fs::exists(manifest_path))
    return fail(manifest_path.string() + ": no manifest (a function folder holds an fnmesh.yml)");
  auto defs = manifest::parse_file(manifest_path);
  if (!defs) return fail(defs.error().what());
  if (auto ok = manifest::check_folder(*defs, folder, manifest_path.string()); !ok)
    return fail(ok.error().what());
  auto bundle = broker::pack_folder(folder);
  if (!bundle) return fail("cannot pack " + folder_arg + ": " + bundle.error().message());

  auto conn = ctx.connect();
  if (!conn) return 1;
  if (auto ok = broker::bootstrap(*conn); !ok)
    return fail("cannot create the JetStream streams and buckets on " + conn->urls() + ": " +
                ok.error().message());
  auto code = ctx.open_bucket(*conn, broker::code_bucket);
  auto functions = ctx.open_bucket(*conn, broker::functions_bucket);
  if (!code || !functions) return 1;
  if (auto ok = broker::store_bundle(*code, *bundle); !ok)
    return fail("cannot store the code bundle of " + folder_arg + ": " + ok.error().message());

  for (const auto& def : *defs) {
    // The version is a hash of the whole spec, code digest included: new code or a changed
    // manifest both give a new version.
    const auto unversioned = manifest::encode_spec(def, bundle->digest, "");
    const std::string version = broker::sha256_hex(unversioned).substr(0, 12);
    const auto buffer = manifest::encode_spec(def, bundle->digest, version);
    const auto* spec = proto::verified<proto::FunctionSpec>(buffer);
    const std::string key = broker::function_key(def.tenant, def.name);

    std::string before;
    if (auto old = functions->get(key); old && old->has_value())
      if (const auto* s = proto::verified<proto::FunctionSpec>(**old)) before = proto::view(s->version());

    if (auto ok = broker::ensure_function_consumer(*conn, *spec); !ok)
      return fail("cannot create the consumer of " + def.name + ": " + ok.error().message());
    if (auto ok = functions->put(key, buffer); !ok)
      return fail("cannot store the spec of " + def.name + ": " + ok.error().message());
    const char* what = before.empty() ? "deployed" : before == version ? "unchanged" : "updated";
    std::printf("%-9s %s  %s %s  version %s  code %s (%zu bytes)\n", what,
                def.tenant == broker::default_tenant ? def.name.c_str() : key.c_str(),
                proto::runtime_name(def.runtime), def.handler.c_str(), version.c_str(),
                bundle->digest.substr(0, 12).c_str(), bundle->buffer.size());
  }
  return 0;
}

std::string triggers_text(const proto::FunctionSpec& s) {
  std::string out;
  auto add = [&out](std::string_view kind, const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
    if (!v) return;
    for (const auto* item : *v) out += (out.empty() ? "" : " ") + std::string(kind) + ":" + item->str();
  };
  const auto* t = s.triggers();
  if (!t || t->http()) out = "http";
  if (t) {
    add("event", t->events());
    add("cron", t->cron());
    add("file", t->files());
  }
  return out.empty() ? "-" : out;
}

int run_ls(const context& ctx, const std::string& tenant, bool as_json) {
  auto conn = ctx.connect();
  if (!conn) return 1;
  auto functions = ctx.open_bucket(*conn, broker::functions_bucket);
  if (!functions) return 1;
  auto keys = functions->keys();
  if (!keys) return fail("cannot list " + std::string(broker::functions_bucket) + ": " + keys.error().message());
  std::sort(keys->begin(), keys->end());
  table t({"FUNCTION", "RUNTIME", "MEMORY", "TIMEOUT", "VERSION", "TRIGGERS"});
  json rows = json::array();
  for (const auto& key : *keys) {
    auto value = functions->get(key);
    if (!value || !value->has_value()) continue;
    const auto* s = proto::verified<proto::FunctionSpec>(**value);
    if (!s) continue;
    const std::string spec_tenant(proto::view(s->tenant()));
    if (!tenant.empty() && spec_tenant != tenant) continue;
    const std::string name(proto::view(s->name()));
    rows.push_back({{"tenant", spec_tenant},
                    {"name", name},
                    {"runtime", proto::runtime_name(s->runtime())},
                    {"handler", proto::view(s->handler())},
                    {"memory_mb", s->memory_mb()},
                    {"timeout_s", s->timeout_s()},
                    {"version", proto::view(s->version())},
                    {"code_digest", proto::view(s->code_digest())},
                    {"triggers", triggers_text(*s)}});
    t.add({spec_tenant == broker::default_tenant ? name : spec_tenant + "/" + name,
           proto::runtime_name(s->runtime()), std::to_string(s->memory_mb()) + " MB",
           std::to_string(s->timeout_s()) + " s", std::string(proto::view(s->version())), triggers_text(*s)});
  }
  if (as_json) std::printf("%s\n", rows.dump(2).c_str());
  else if (rows.empty()) std::printf("no functions deployed (fnmesh deploy <folder>)\n");
  else t.print();
  return 0;
}

int run_rm(const context& ctx, const std::string& function, const std::string& tenant) {
  auto conn = ctx.connect();
  if (!conn) return 1;
  auto functions = ctx.open_bucket(*conn, broker::functions_bucket);
  if (!functions) return 1;
  const std::string key = broker::function_key(tenant, function);
  auto value = functions->get(key);
  if (!value) return fail("cannot read " + key + ": " + value.error().message());
  if (!value->has_value()) return fail("no_such_function: " + function);
  if (auto ok = functions->erase(key); !ok) return fail("cannot remove " + key + ": " + ok.error().message());
  if (auto ok = broker::remove_function_consumer(*conn, tenant, function); !ok)
    return fail("removed the spec of " + function + " but not its consumer: " + ok.error().message());
  std::printf("removed %s\n", function.c_str());
  return 0;
}

}  // namespace

void add_deploy_commands(CLI::App& app, context& ctx, command_list& out) {
  auto folder = std::make_shared<std::string>();
  auto* deploy = app.add_subcommand("deploy", "deploy the functions of a folder (its fnmesh.yml; the folder is the code)");
  deploy->add_option("folder", *folder, "function folder")->required()->type_name("FOLDER");
  out.push_back({deploy, [&ctx, folder] { return run_deploy(ctx, *folder); }});

  struct ls_options {
    std::string tenant;
    bool json = false;
  };
  auto lo = std::make_shared<ls_options>();
  auto* ls = app.add_subcommand("ls", "list deployed functions");
  ls->add_option("--tenant", lo->tenant, "only this tenant's functions");
  ls->add_flag("--json", lo->json, "print JSON");
  out.push_back({ls, [&ctx, lo] { return run_ls(ctx, lo->tenant, lo->json); }});

  struct rm_options {
    std::string function;
    std::string tenant = std::string(broker::default_tenant);
  };
  auto ro = std::make_shared<rm_options>();
  auto* rm = app.add_subcommand("rm", "remove a deployed function (its spec and its consumer)");
  rm->add_option("function", ro->function, "function name")->required();
  rm->add_option("--tenant", ro->tenant, "tenant")->capture_default_str();
  out.push_back({rm, [&ctx, ro] { return run_rm(ctx, ro->function, ro->tenant); }});
}

}  // namespace fnmesh::cli
