// fnmesh billing | activations | result: GETs against the collector's HTTP JSON API.
// Parameters go to the collector as given: it checks them, and its 400 text is ours.
#include <chrono>
#include <cstdio>
#include <optional>

#include "tools/cli.h"
#include "tools/http_get.h"

namespace fnmesh::cli {
namespace {

using json = nlohmann::json;

// What every query command takes: the query parameters given on the command line (only
// those), the output format, the timeout.
struct query_options {
  std::vector<std::pair<std::string, std::string>> params;
  std::string format = "table";
  double timeout_s = 5;
};

std::string query_string(const query_options& o) {
  std::string q;
  for (const auto& [name, value] : o.params) q += (q.empty() ? "?" : "&") + name + "=" + percent_encode(value);
  return q;
}

// The JSON body of a 200 answer to GET `target`. Otherwise prints one line and returns
// nullopt: the collector's own error text, `not_found` for a 404 when given, or that the
// collector cannot be reached.
std::optional<json> collector_get(const context& ctx, const std::string& target, double timeout_s,
                                  const std::string& not_found = "") {
  const std::string url = ctx.collector_http();
  auto answer = http_get(url, target, ctx.collector_token(), std::chrono::milliseconds(int64_t(timeout_s * 1000)));
  if (!answer) {
    fail(answer.error() + " (is the mesh up? fnmesh status)");
    return std::nullopt;
  }
  json body = json::parse(answer->body, nullptr, /*allow_exceptions=*/false);
  if (answer->status == 404 && !not_found.empty()) {
    fail(not_found);
    return std::nullopt;
  }
  if (answer->status != 200) {
    fail(body.is_object() && body.contains("error") && body["error"].is_string()
             ? body["error"].get<std::string>()
             : "the collector at " + url + " answered " + std::to_string(answer->status));
    return std::nullopt;
  }
  if (!body.is_object()) {
    fail("the collector at " + url + " answered something that is not a JSON object");
    return std::nullopt;
  }
  return body;
}

// A field as it is shown: strings as they are, numbers as JSON writes them.
std::string cell(const json& j, const char* key) {
  const json& v = j.at(key);
  return v.is_string() ? v.get<std::string>() : v.dump();
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string megabytes(const json& bytes) { return fixed(bytes.get<double>() / double(1 << 20), 1); }

// RFC 4180: a field with a comma, a quote or a line break is quoted, quotes doubled.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void print_csv(const std::vector<std::vector<std::string>>& rows) {
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) line += (i ? "," : "") + csv_field(row[i]);
    std::printf("%s\n", line.c_str());
  }
}

// Table or CSV: the header, the rows, and (table only) a last row such as TOTAL.
void print_rows(const std::string& format, std::vector<std::vector<std::string>> rows,
                std::optional<std::vector<std::string>> footer = std::nullopt) {
  if (format == "csv") return print_csv(rows);
  table t(std::move(rows[0]));
  for (size_t i = 1; i < rows.size(); ++i) t.add(std::move(rows[i]));
  if (footer) t.add(std::move(*footer));
  t.print();
}

std::vector<std::string> usage_row(std::string key, const json& r) {
  return {std::move(key),
          cell(r, "invocations"),
          cell(r, "errors"),
          cell(r, "billed_ms"),
          cell(r, "gb_seconds"),
          fixed(r.at("cpu_ns").get<double>() / 1e9, 3),
          megabytes(r.at("peak_memory_bytes")),
          megabytes(r.at("network_bytes")),
          cell(r, "cold_starts"),
          cell(r, "cost_usd")};
}

int run_billing(const context& ctx, const query_options& o) {
  auto body = collector_get(ctx, "/v1/usage" + query_string(o), o.timeout_s);
  if (!body) return 1;
  if (o.format == "json") {
    std::printf("%s\n", body->dump(2).c_str());
    return 0;
  }
  std::string key = body->value("by", "key");
  for (auto& c : key) c = char(std::toupper(static_cast<unsigned char>(c)));
  // CPU_S, PEAK_MB (the largest single invocation's) and NET_MB are what was used, beside
  // what the lambda model bills (BILLED_MS, GB_S); COST_USD is in the model asked for.
  std::vector<std::vector<std::string>> rows{
      {key, "INVOCATIONS", "ERRORS", "BILLED_MS", "GB_S", "CPU_S", "PEAK_MB", "NET_MB", "COLD", "COST_USD"}};
  for (const auto& r : body->at("rows")) rows.push_back(usage_row(cell(r, "key"), r));
  // The collector's total is exact (integer sums); summing rounded rows here would not be.
  print_rows(o.format, std::move(rows), usage_row("TOTAL", body->at("total")));
  return 0;
}

int run_activations(const context& ctx, const query_options& o) {
  auto body = collector_get(ctx, "/v1/activations" + query_string(o), o.timeout_s);
  if (!body) return 1;
  if (o.format == "json") {
    std::printf("%s\n", body->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows{
      {"ID", "ATTEMPT", "FUNCTION", "STATUS", "NODE", "FINISHED", "DURATION", "BILLED_MS", "COLD"}};
  for (const auto& a : body->at("activations"))
    rows.push_back({cell(a, "invocation_id"), cell(a, "attempt"), cell(a, "tenant") + "/" + cell(a, "function"),
                    cell(a, "status"), cell(a, "node"), cell(a, "finished"),
                    human_duration_ns(int64_t(a.at("duration_ms").get<double>() * 1e6)), cell(a, "billed_ms"),
                    a.at("cold_start").get<bool>() ? "yes" : "no"});
  print_rows(o.format, std::move(rows));
  return 0;
}

struct result_options {
  std::string id;
  bool json = false;
  double timeout_s = 5;
};

std::string output_of(const json& attempt) {
  if (attempt.value("output_expired", false)) return "expired (retention)";
  if (attempt.contains("output_base64"))
    return "(binary, base64) " + attempt["output_base64"].get<std::string>();
  return attempt.value("output", "");
}

int run_result(const context& ctx, const result_options& o) {
  auto body = collector_get(ctx, "/v1/activations/" + percent_encode(o.id), o.timeout_s,
                            "not found: " + o.id + " (no finished attempt stored yet)");
  if (!body) return 1;
  if (o.json) {
    std::printf("%s\n", body->dump(2).c_str());
    return 0;
  }
  const json& attempts = body->at("attempts");
  if (attempts.empty()) return fail("not found: " + o.id + " (no finished attempt stored yet)");
  const json& last = attempts.back();
  const json& usage = last.at("usage");
  std::printf("invocation  %s\n", cell(*body, "invocation_id").c_str());
  std::printf("function    %s/%s\n", cell(*body, "tenant").c_str(), cell(*body, "function").c_str());
  std::printf("status      %s\n", cell(last, "status").c_str());
  std::printf("attempts    %zu stored (last: attempt %s on %s%s)\n", attempts.size(), cell(last, "attempt").c_str(),
              cell(last, "node").c_str(), last.at("cold_start").get<bool>() ? ", cold start" : "");
  for (size_t i = 0; i + 1 < attempts.size(); ++i) {
    const json& a = attempts[i];
    const std::string error = a.value("error", "");
    std::printf("  attempt %s  %s on %s after %s%s\n", cell(a, "attempt").c_str(), cell(a, "status").c_str(),
                cell(a, "node").c_str(), human_duration_ns(a.at("usage").at("wall_ns").get<int64_t>()).c_str(),
                error.empty() ? "" : (": " + error).c_str());
  }
  if (const int64_t wall = usage.at("wall_ns").get<int64_t>(); wall > 0)
    std::printf("duration    %s (billed %s ms)\n", human_duration_ns(wall).c_str(), cell(usage, "billed_ms").c_str());
  std::printf("cost        %s USD (lambda model), %s USD (usage model)\n", cell(last, "cost_usd_lambda").c_str(),
              cell(last, "cost_usd_usage").c_str());
  if (const std::string error = last.value("error", ""); !error.empty()) std::printf("error       %s\n", error.c_str());
  std::printf("output      %s\n", output_of(last).c_str());
  return 0;
}

// `--<name>` sent as the query parameter <name> when given.
void add_param(CLI::App* cmd, const std::shared_ptr<query_options>& o, const std::string& name,
               const std::string& help) {
  cmd->add_option_function<std::string>(
      "--" + name, [o, name](const std::string& v) { o->params.emplace_back(name, v); }, help);
}

void add_format(CLI::App* cmd, const std::shared_ptr<query_options>& o) {
  cmd->add_option("--format", o->format, "table, json (the collector's answer) or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();
  cmd->add_option("--timeout", o->timeout_s, "seconds to wait for the collector")->capture_default_str();
}

constexpr const char* times_help = "ISO 8601 (2026-11-27, 2026-11-27T10:00Z), a time ago (90s, 30m, 1h, 7d, 2w) or now";

}  // namespace

void add_collector_commands(CLI::App& app, context& ctx, command_list& out) {
  auto bo = std::make_shared<query_options>();
  auto* billing = app.add_subcommand("billing", "usage and cost, grouped by function, tenant, node, hour or day");
  add_param(billing, bo, "tenant", "only this tenant");
  add_param(billing, bo, "function", "only this function");
  add_param(billing, bo, "node", "only this node");
  add_param(billing, bo, "since", std::string("finished at or after: ") + times_help + " (default: all time)");
  add_param(billing, bo, "until", std::string("finished before: ") + times_help);
  add_param(billing, bo, "by", "group by function (default), tenant, node, hour or day");
  add_param(billing, bo, "model", "cost model: lambda (default: billed ms x memory) or usage (CPU, memory, network)");
  add_format(billing, bo);
  billing->footer("The collector checks every parameter; its error is printed as is, exit 1.");
  out.push_back({billing, [&ctx, bo] { return run_billing(ctx, *bo); }});

  auto ao = std::make_shared<query_options>();
  auto* activations = app.add_subcommand("activations", "the latest finished attempts, newest first");
  add_param(activations, ao, "tenant", "only this tenant");
  add_param(activations, ao, "function", "only this function");
  add_param(activations, ao, "status", "only this status: ok, error, timeout, out_of_memory, cpu_limit, crashed, ...");
  add_param(activations, ao, "since", std::string("finished at or after: ") + times_help);
  add_param(activations, ao, "until", std::string("finished before: ") + times_help);
  add_param(activations, ao, "limit", "at most this many (1-1000, default 50)");
  add_format(activations, ao);
  out.push_back({activations, [&ctx, ao] { return run_activations(ctx, *ao); }});

  auto ro = std::make_shared<result_options>();
  auto* result = app.add_subcommand("result", "the stored result of an invocation (its last attempt)");
  result->add_option("id", ro->id, "invocation id")->required();
  result->add_flag("--json", ro->json, "print the collector's JSON (every attempt)");
  result->add_option("--timeout", ro->timeout_s, "seconds to wait for the collector")->capture_default_str();
  result->footer("Exit status 1 when the collector has no attempt of that invocation (yet).");
  out.push_back({result, [&ctx, ro] { return run_result(ctx, *ro); }});
}

}  // namespace fnmesh::cli
