// fnmesh result | billing: queries to the billing collector over ZeroMQ.
#include <algorithm>

#include "broker/client/collector_client.h"
#include "broker/client/subjects.h"
#include "common/clock.h"
#include "common/errc.h"
#include "tools/cli.h"

namespace fnmesh::cli {
namespace {

using json = nlohmann::json;

int collector_failure(const std::string& endpoint, const std::error_code& ec) {
  if (ec == errc::timeout)
    return fail("the collector at " + endpoint + " did not answer (is the mesh up? fnmesh status)");
  return fail("collector query to " + endpoint + " failed: " + ec.message());
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string megabytes(int64_t bytes) { return fixed(double(bytes) / double(1 << 20), 1); }

struct result_options {
  std::string id;
  bool json = false;
  double timeout_s = 5;
};

int run_result(const context& ctx, const result_options& o) {
  const std::string endpoint = ctx.collector_endpoint();
  zmq::context_t zctx(1);
  broker::collector_client client(zctx, endpoint);
  auto reply = client.query_activation(o.id, std::chrono::milliseconds(int64_t(o.timeout_s * 1000)));
  if (!reply) return collector_failure(endpoint, reply.error());
  const proto::CollectorReply& r = reply->get();
  if (const auto* e = r.body_as_ErrorReply()) return fail("collector: " + std::string(proto::view(e->message())));
  const auto* report = r.body_as_ActivationReport();
  if (!report || !report->attempts() || report->attempts()->size() == 0)
    return fail("not found: " + o.id + " (no finished attempt stored yet)");
  const auto* last = report->attempts()->Get(report->attempts()->size() - 1);
  const proto::Result* res = last->result();
  const proto::Usage* use = last->usage();
  if (!res) return fail("not found: " + o.id);
  const auto out = proto::bytes(res->output());
  const std::string function =
      use ? std::string(proto::view(use->tenant())) + "/" + std::string(proto::view(use->function())) : "";
  const int64_t wall = use ? use->wall_ns() : 0;

  if (o.json) {
    json j = {{"invocation_id", proto::view(res->invocation_id())},
              {"function", function},
              {"status", proto::status_name(res->status())},
              {"attempt", res->attempt()},
              {"attempts", report->attempts()->size()},
              {"node", proto::view(res->node_id())},
              {"cold_start", res->cold_start()},
              {"wall_ns", wall},
              {"error", proto::view(res->error())},
              {"output", std::string(proto::text(out))}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("invocation  %s\n", std::string(proto::view(res->invocation_id())).c_str());
  if (!function.empty()) std::printf("function    %s\n", function.c_str());
  std::printf("status      %s\n", proto::status_name(res->status()));
  std::printf("attempts    %u stored (last: attempt %u on %s%s)\n", report->attempts()->size(), res->attempt(),
              std::string(proto::view(res->node_id())).c_str(), res->cold_start() ? ", cold start" : "");
  if (wall > 0) std::printf("duration    %s\n", human_duration_ns(wall).c_str());
  if (res->error() && res->error()->size() > 0)
    std::printf("error       %s\n", std::string(proto::view(res->error())).c_str());
  std::printf("output      %s\n", std::string(proto::text(out)).c_str());
  return 0;
}

struct billing_options {
  std::string since = "24h";
  std::string tenant;
  std::string function;
  std::string by = "function";
  bool json = false;
  double timeout_s = 5;
};

int run_billing(const context& ctx, const billing_options& o) {
  int64_t since_ns = 0;
  if (o.since != "all") {
    const auto ago = parse_duration_ns(o.since);
    if (!ago) return fail("--since: expected a duration like 90s, 30m, 1h, 7d or all, got " + o.since);
    since_ns = unix_now_ns() - *ago;
  }
  const std::string endpoint = ctx.collector_endpoint();
  zmq::context_t zctx(1);
  broker::collector_client client(zctx, endpoint);
  auto reply = client.query_usage(o.tenant, o.function, since_ns, 0, o.by,
                                  std::chrono::milliseconds(int64_t(o.timeout_s * 1000)));
  if (!reply) return collector_failure(endpoint, reply.error());
  const proto::CollectorReply& r = reply->get();
  if (const auto* e = r.body_as_ErrorReply()) return fail("collector: " + std::string(proto::view(e->message())));
  const auto* report = r.body_as_UsageReport();
  if (!report) return fail("collector: unexpected reply to a usage query");

  std::string header = o.by;
  for (auto& c : header) c = char(std::toupper(c));
  // CPU_S and PEAK_MB are what was used (the largest single invocation's peak), beside
  // what the lambda model bills (BILLED_MS, GB_S).
  table t({header, "INVOCATIONS", "ERRORS", "BILLED_MS", "GB_S", "CPU_S", "PEAK_MB", "COLD_STARTS"});
  json rows = json::array();
  uint64_t inv = 0, err = 0, billed = 0, cpu = 0, cold = 0;
  int64_t peak = 0;
  double gbs = 0;
  if (report->rows())
    for (const auto* row : *report->rows()) {
      t.add({std::string(proto::view(row->key())), std::to_string(row->invocations()), std::to_string(row->errors()),
             std::to_string(row->billed_ms()), fixed(row->gb_seconds(), 6), fixed(double(row->cpu_ns()) / 1e9, 3),
             megabytes(row->peak_memory_bytes()), std::to_string(row->cold_starts())});
      rows.push_back({{o.by, proto::view(row->key())},
                      {"invocations", row->invocations()},
                      {"errors", row->errors()},
                      {"billed_ms", row->billed_ms()},
                      {"gb_seconds", row->gb_seconds()},
                      {"cpu_seconds", double(row->cpu_ns()) / 1e9},
                      {"peak_memory_bytes", row->peak_memory_bytes()},
                      {"cold_starts", row->cold_starts()}});
      inv += row->invocations();
      err += row->errors();
      billed += row->billed_ms();
      gbs += row->gb_seconds();
      cpu += row->cpu_ns();
      cold += row->cold_starts();
      peak = std::max(peak, row->peak_memory_bytes());
    }
  if (o.json) {
    std::printf("%s\n", rows.dump(2).c_str());
    return 0;
  }
  t.add({"TOTAL", std::to_string(inv), std::to_string(err), std::to_string(billed), fixed(gbs, 6),
         fixed(double(cpu) / 1e9, 3), megabytes(peak), std::to_string(cold)});
  t.print();
  return 0;
}

}  // namespace

void add_collector_commands(CLI::App& app, context& ctx, command_list& out) {
  auto ro = std::make_shared<result_options>();
  auto* result = app.add_subcommand("result", "the stored result of an invocation (its last attempt)");
  result->add_option("id", ro->id, "invocation id")->required();
  result->add_flag("--json", ro->json, "print JSON");
  result->add_option("--timeout", ro->timeout_s, "seconds to wait for the collector")->capture_default_str();
  result->footer("Exit status 1 when the collector has no attempt of that invocation (yet).");
  out.push_back({result, [&ctx, ro] { return run_result(ctx, *ro); }});

  auto bo = std::make_shared<billing_options>();
  auto* billing = app.add_subcommand("billing", "usage and cost per function, tenant or node");
  billing->add_option("--since", bo->since, "window: 90s, 30m, 1h, 7d or all")->capture_default_str();
  billing->add_option("--tenant", bo->tenant, "only this tenant");
  billing->add_option("--function", bo->function, "only this function");
  billing->add_option("--by", bo->by, "group by")
      ->check(CLI::IsMember({"function", "tenant", "node"}))
      ->capture_default_str();
  billing->add_flag("--json", bo->json, "print JSON");
  billing->add_option("--timeout", bo->timeout_s, "seconds to wait for the collector")->capture_default_str();
  out.push_back({billing, [&ctx, bo] { return run_billing(ctx, *bo); }});
}

}  // namespace fnmesh::cli
