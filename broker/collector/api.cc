#include "broker/collector/api.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <span>

#include "broker/collector/prices.h"
#include "broker/collector/query_time.h"
#include "broker/collector/reader.h"
#include "common/base64.h"
#include "common/clock.h"

namespace fnmesh::collector {
namespace {

using json = nlohmann::json;

constexpr int max_activations = 1000;

// Text the store holds is the senders' and may not be UTF-8: such bytes become U+FFFD.
api_response reply(int status, const json& body) {
  return {status, body.dump(-1, ' ', false, json::error_handler_t::replace)};
}
api_response refuse(int status, const std::string& reason) {
  return reply(status, json{{"error", reason}});
}

// The query parameters of one endpoint: each allowed name at most once.
class params_of {
 public:
  // Empty error() when every parameter is allowed and none repeats.
  params_of(const query_params& given, std::initializer_list<const char*> allowed) {
    for (const auto& [name, value] : given) {
      if (std::find_if(allowed.begin(), allowed.end(),
                       [&](const char* a) { return name == a; }) == allowed.end()) {
        std::string names;
        for (const char* a : allowed) names += std::string(names.empty() ? "" : ", ") + a;
        error_ = "unknown parameter '" + name + "' (" + names + ")";
        return;
      }
      for (const auto& [seen, _] : values_)
        if (seen == name) {
          error_ = "parameter '" + name + "' given twice";
          return;
        }
      values_.emplace_back(name, value);
    }
  }
  const std::string& error() const noexcept { return error_; }
  std::string get(std::string_view name, std::string fallback = "") const {
    for (const auto& [n, v] : values_)
      if (n == name) return v;
    return fallback;
  }
  bool has(std::string_view name) const {
    return std::any_of(values_.begin(), values_.end(), [&](auto& nv) { return nv.first == name; });
  }

 private:
  std::vector<std::pair<std::string, std::string>> values_;
  std::string error_;
};

// since/until of a query; the error text when either is bad.
std::string read_window(const params_of& p, int64_t& since_ns, int64_t& until_ns) {
  const int64_t now = unix_now_ns();
  if (p.has("since")) {
    auto t = parse_query_time(p.get("since"), now);
    if (!t) return "since: " + t.error();
    since_ns = *t;
  }
  if (p.has("until")) {
    auto t = parse_query_time(p.get("until"), now);
    if (!t) return "until: " + t.error();
    until_ns = *t;
  }
  if (since_ns > until_ns)
    return "since (" + format_time(since_ns) + ") is after until (" + format_time(until_ns) + ")";
  return "";
}

// The tenant a caller's query is limited to; nullopt when a tenant asks for another
// tenant's records (the answer is then empty, never an error that would confirm the
// other tenant exists).
std::optional<std::string> tenant_scope(const caller& who, const std::string& asked) {
  if (who.admin) return asked;
  if (!asked.empty() && asked != who.tenant) return std::nullopt;
  return who.tenant;
}

// value / 10^decimals, exactly, without trailing zeros ("0.0015", "12.0").
std::string exact_decimal(__int128 value, int decimals) {
  const bool negative = value < 0;
  if (negative) value = -value;
  std::string digits;
  do {
    digits.insert(digits.begin(), char('0' + int(value % 10)));
    value /= 10;
  } while (value > 0);
  if (int(digits.size()) <= decimals) digits.insert(0, size_t(decimals + 1 - digits.size()), '0');
  std::string out = digits.substr(0, digits.size() - size_t(decimals)) + "." +
                    digits.substr(digits.size() - size_t(decimals));
  while (out.back() == '0' && out[out.size() - 2] != '.') out.pop_back();
  return (negative ? "-" : "") + out;
}

// MB-ms as GB-s (1 GB = 1024 MB): mb_ms / 1,024,000 = mb_ms x 9,765,625 / 10^13.
std::string gb_seconds(int64_t mb_ms) { return exact_decimal(__int128(mb_ms) * 9'765'625, 13); }

json usage_json(const usage_row& r, bool lambda) {
  const int64_t cost = lambda ? r.cost_lambda_pusd : r.cost_usage_pusd;
  return {{"invocations", r.invocations},
          {"errors", r.errors},
          {"cold_starts", r.cold_starts},
          {"billed_ms", r.billed_ms},
          {"memory_mb_ms", r.memory_mb_ms},
          {"gb_seconds", gb_seconds(r.memory_mb_ms)},
          {"cpu_ns", r.cpu_ns},
          {"peak_memory_bytes", r.peak_memory_bytes},
          {"peak_memory_mb_ms", r.peak_memory_mb_ms},
          {"network_bytes", r.network_bytes},
          {"cost_pusd", cost},
          {"cost_usd", format_usd(cost)}};
}

bool valid_utf8(std::span<const uint8_t> s) {
  static constexpr uint32_t smallest[] = {0, 0x80, 0x800, 0x10000};
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = s[i];
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
    else return false;
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if (cp < smallest[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

json attempt_json(const stored_attempt& a) {
  return {{"invocation_id", a.invocation_id},
          {"attempt", a.attempt},
          {"tenant", a.tenant},
          {"function", a.function},
          {"status", proto::status_name(a.status)},
          {"node", a.node_id},
          {"cold_start", a.cold_start},
          {"trigger", proto::trigger_name(a.trigger)},
          {"queued", format_time(a.queued_ns)},
          {"started", format_time(a.started_ns)},
          {"finished", format_time(a.finished_ns)},
          {"duration_ms", double(a.wall_ns / 1000) / 1000.0},
          {"billed_ms", a.billed_ms},
          {"memory_mb", a.memory_mb},
          {"error", a.error},
          {"output_bytes", a.output_bytes},
          {"output_expired", a.output_expired},
          {"cost_lambda_pusd", a.cost_lambda_pusd},
          {"cost_usage_pusd", a.cost_usage_pusd}};
}

}  // namespace

api_response api::handle(const caller& who, std::string_view path, const query_params& params) {
  constexpr std::string_view one = "/v1/activations/";
  if (path == "/v1/usage") return usage(who, params);
  if (path == "/v1/activations") return activations(who, params);
  if (path.starts_with(one) && path.size() > one.size()) {
    if (!params.empty()) return refuse(400, "unknown parameter '" + params[0].first + "' (none)");
    return activation(who, path.substr(one.size()));
  }
  return refuse(404, "no such endpoint: " + std::string(path) +
                         " (/v1/usage, /v1/activations, /v1/activations/<id>)");
}

api_response api::usage(const caller& who, const query_params& given) {
  params_of p(given, {"tenant", "function", "node", "since", "until", "by", "group_by", "model"});
  if (!p.error().empty()) return refuse(400, p.error());
  if (p.has("by") && p.has("group_by")) return refuse(400, "give by or group_by, not both");
  const std::string by = p.get("by", p.get("group_by", "function"));
  const auto group = parse_grouping(by);
  if (!group) return refuse(400, "by: '" + by + "' is not a grouping (function, tenant, node, hour, day)");
  const std::string model = p.get("model", "lambda");
  if (model != "lambda" && model != "usage")
    return refuse(400, "model: '" + model + "' is not a billing model (lambda, usage)");
  usage_filter f{.function = p.get("function"), .node = p.get("node"), .group_by = *group};
  if (auto bad = read_window(p, f.since_ns, f.until_ns); !bad.empty()) return refuse(400, bad);
  const auto tenant = tenant_scope(who, p.get("tenant"));

  std::vector<usage_row> rows;
  if (tenant) {
    f.tenant = *tenant;
    auto got = db_.usage(f);
    if (!got) return refuse(500, "usage query failed: " + got.error().message());
    rows = std::move(*got);
  }
  const bool lambda = model == "lambda";
  usage_row total;
  json out_rows = json::array();
  for (const auto& r : rows) {
    json row = usage_json(r, lambda);
    row["key"] = r.key;
    out_rows.push_back(std::move(row));
    total += r;
  }
  json out = {{"by", by},
              {"model", model},
              {"since", p.has("since") ? json(format_time(f.since_ns)) : json()},
              {"until", p.has("until") ? json(format_time(f.until_ns)) : json()},
              {"rows", std::move(out_rows)},
              {"total", usage_json(total, lambda)}};
  return reply(200, out);
}

api_response api::activations(const caller& who, const query_params& given) {
  params_of p(given, {"tenant", "function", "status", "since", "until", "limit"});
  if (!p.error().empty()) return refuse(400, p.error());
  activation_filter f{.function = p.get("function"), .status = p.get("status")};
  if (!f.status.empty()) {
    bool known = false;
    for (auto s : proto::EnumValuesStatus()) known |= f.status == proto::status_name(s);
    if (!known)
      return refuse(400, "status: '" + f.status +
                             "' is not a status (ok, error, timeout, out_of_memory, cpu_limit, "
                             "crashed, rejected, no_such_function)");
  }
  if (p.has("limit")) {
    const std::string text = p.get("limit");
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), f.limit);
    if (ec != std::errc() || end != text.data() + text.size() || f.limit < 1 ||
        f.limit > max_activations)
      return refuse(400, "limit: '" + text + "' is not a number from 1 to " +
                             std::to_string(max_activations));
  }
  if (auto bad = read_window(p, f.since_ns, f.until_ns); !bad.empty()) return refuse(400, bad);
  json list = json::array();
  if (const auto tenant = tenant_scope(who, p.get("tenant"))) {
    f.tenant = *tenant;
    auto got = db_.activations(f);
    if (!got) return refuse(500, "activations query failed: " + got.error().message());
    for (const auto& a : *got) list.push_back(attempt_json(a));
  }
  return reply(200, json{{"activations", std::move(list)}});
}

api_response api::activation(const caller& who, std::string_view id) {
  auto got = db_.activation(id);
  if (!got) return refuse(500, "activation query failed: " + got.error().message());
  if (got->empty() || (!who.admin && got->front().tenant != who.tenant))
    return refuse(404, "no activation " + std::string(id));
  json attempts = json::array();
  for (const auto& a : *got) {
    json j = attempt_json(a);
    for (const char* repeated : {"invocation_id", "tenant", "function"}) j.erase(repeated);
    j["content_type"] = a.content_type;
    if (valid_utf8(a.output)) j["output"] = std::string(a.output.begin(), a.output.end());
    else j["output_base64"] = base64(a.output);
    j["cost_usd_lambda"] = format_usd(a.cost_lambda_pusd);
    j["cost_usd_usage"] = format_usd(a.cost_usage_pusd);
    j["usage"] = {{"wall_ns", a.wall_ns},
                  {"cpu_user_ns", a.cpu_user_ns},
                  {"cpu_system_ns", a.cpu_system_ns},
                  {"peak_memory_bytes", a.peak_memory_bytes},
                  {"memory_limit_bytes", a.memory_limit_bytes},
                  {"net_rx_bytes", a.net_rx_bytes},
                  {"net_tx_bytes", a.net_tx_bytes},
                  {"billed_ms", a.billed_ms},
                  {"source", proto::EnumNameAccountingSource(a.source)},
                  {"trigger", proto::trigger_name(a.trigger)}};
    attempts.push_back(std::move(j));
  }
  const auto& first = got->front();
  return reply(200, json{{"invocation_id", first.invocation_id},
                         {"tenant", first.tenant},
                         {"function", first.function},
                         {"attempts", std::move(attempts)}});
}

}  // namespace fnmesh::collector
