#include "tools/cli.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace fnmesh::cli {
void context::add_global_options(CLI::App& app) {
  app.add_option("--nats", nats_, "NATS URL(s), comma-separated")
      ->envname("FNMESH_NATS")
      ->type_name("URL");
  app.add_option("--collector-http", collector_http_, "the collector's HTTP API (http://HOST:PORT)")
      ->envname("FNMESH_COLLECTOR_HTTP")
      ->type_name("URL");
  app.add_option("--token", token_, "bearer token for the collector's HTTP API (default: the mesh's admin token)")
      ->envname("FNMESH_TOKEN");
  app.add_option("--home", home_, "where `up` keeps logs, pids and data (default ./.fnmesh)")
      ->envname("FNMESH_HOME")
      ->type_name("DIR");
  app.add_option("--log-level", log_level_, "client library log level")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
}

std::filesystem::path context::home() const {
  return std::filesystem::absolute(std::filesystem::path(home_.empty() ? ".fnmesh" : home_))
      .lexically_normal();
}

std::string context::nats_url() const {
  if (!nats_.empty()) return nats_;
  if (auto status = read_status(home()); status && status->contains("nats"))
    return (*status)["nats"].get<std::string>();
  return std::string(default_nats);
}

std::string context::collector_http() const {
  if (!collector_http_.empty()) return collector_http_;
  if (auto status = read_status(home()); status && status->contains("collector_http"))
    return (*status)["collector_http"].get<std::string>();
  return std::string(default_collector_http);
}

std::string context::collector_token() const {
  if (!token_.empty()) return token_;
  auto status = read_status(home());
  if (!status || !status->contains("collector_tokens")) return "";
  try {
    const YAML::Node admin = YAML::LoadFile((*status)["collector_tokens"].get<std::string>())["admin"];
    if (admin.IsSequence() && admin.size() > 0) return admin[0].as<std::string>();
  } catch (const std::exception&) {  // YAML or a malformed status.json
    // unreadable: no token, and the collector's 401 says so
  }
  return "";
}

std::unique_ptr<broker::connection> context::connect() const {
  broker::connect_options opts;
  opts.urls = nats_url();
  opts.name = "fnmesh-cli";
  opts.reconnect = false;
  auto conn = broker::connection::connect(opts);
  if (!conn) {
    const std::string why = conn.error().message();
    fail(why.find(opts.urls) != std::string::npos ? why
                                                   : "cannot reach NATS at " + opts.urls + ": " + why);
    return nullptr;
  }
  return std::move(*conn);
}

std::unique_ptr<broker::kv_bucket> context::open_bucket(broker::connection& conn,
                                                        std::string_view bucket) const {
  auto kv = broker::kv_bucket::open(conn, bucket);
  if (!kv) {
    fail("cannot open KV bucket " + std::string(bucket) + " on " + conn.urls() + ": " +
         kv.error().message() + " (start the mesh with `fnmesh up`)");
    return nullptr;
  }
  return std::move(*kv);
}

std::optional<nlohmann::json> read_status(const std::filesystem::path& home) {
  auto text = read_file(home / "status.json");
  if (!text) return std::nullopt;
  auto parsed = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) return std::nullopt;
  return parsed;
}

int fail(std::string_view message) {
  std::fprintf(stderr, "fnmesh: %.*s\n", int(message.size()), message.data());
  return 1;
}

std::optional<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void table::print(std::FILE* out) const {
  std::vector<size_t> width;
  for (const auto& row : rows_)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::fprintf(out, "%s\n", line.c_str());
  }
}

std::optional<int64_t> parse_duration_ns(std::string_view text) {
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || n < 0) return std::nullopt;
  const std::string_view unit(end, text.data() + text.size() - end);
  int64_t scale = 0;
  if (unit == "ms") scale = 1'000'000;
  else if (unit == "s" || unit.empty()) scale = 1'000'000'000;
  else if (unit == "m" || unit == "min") scale = 60'000'000'000;
  else if (unit == "h") scale = 3'600'000'000'000;
  else if (unit == "d") scale = 86'400'000'000'000;
  else return std::nullopt;
  return n * scale;
}

std::string human_duration_ns(int64_t ns) {
  char buf[64];
  if (ns < 1'000'000) std::snprintf(buf, sizeof buf, "%lld µs", (long long)(ns / 1000));
  else if (ns < 1'000'000'000) std::snprintf(buf, sizeof buf, "%.1f ms", double(ns) / 1e6);
  else if (ns < 120'000'000'000) std::snprintf(buf, sizeof buf, "%.1f s", double(ns) / 1e9);
  else std::snprintf(buf, sizeof buf, "%lld min", (long long)(ns / 60'000'000'000));
  return buf;
}

std::string rfc3339_ms(int64_t unix_ns) {
  const std::time_t secs = std::time_t(unix_ns / 1'000'000'000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", int(unix_ns / 1'000'000 % 1000));
  return buf;
}

std::string why(natsStatus s) {
  const char* last = nats_GetLastError(nullptr);
  return last && *last ? last : natsStatus_GetText(s);
}

}  // namespace fnmesh::cli
