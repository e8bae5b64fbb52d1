#include "tools/manifest.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>
#include <unistd.h>

#include "common/allow_entry.h"
#include "common/yaml_describe.h"
#include "trigger-adapters/cron/schedule.h"

namespace fnmesh::manifest {
namespace {

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && !(i > 0 && c == '-')) return false;
  }
  return true;
}

bool identifier(std::string_view s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t at = s.find(sep, start);
    out.emplace_back(s.substr(start, at == std::string_view::npos ? s.npos : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::istringstream in{std::string(s)};
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// A NATS subject under fnmesh.events.: dot-separated tokens, '*' a whole token, '>' last.
bool valid_event_subject(std::string_view s) {
  if (s.empty()) return false;
  const auto tokens = split(s, '.');
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (t.empty()) return false;
    for (char c : t)
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n') return false;
    if (t.find('*') != std::string::npos && t != "*") return false;
    if (t.find('>') != std::string::npos && (t != ">" || i + 1 != tokens.size())) return false;
  }
  return true;
}

// Checks values and keys while the document is walked, keeping the first error.
// Owns that error; lives for one parse on the caller's thread.
class checker {
 public:
  explicit checker(const std::string& file) : file_(file) {}

  bool fail(const YAML::Node& at, const std::string& field, std::string message) {
    const YAML::Mark m = at.Mark();
    return fail_at(m.is_null() ? 0 : m.line + 1, field, std::move(message));
  }
  bool fail_at(int line, const std::string& field, std::string message) {
    if (!error_) error_ = manifest_error{file_, line, field, std::move(message)};
    return false;
  }
  const manifest_error& error() const { return *error_; }

  // Each key of `map` must be a scalar in `allowed`, present once.
  bool keys(const YAML::Node& map, const std::string& field,
            std::initializer_list<std::string_view> allowed) {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      const YAML::Node& key = it->first;
      if (!key.IsScalar()) return fail(key, field, "keys must be names, got " + describe_yaml(key));
      const std::string& k = key.Scalar();
      bool known = false;
      for (auto a : allowed) known = known || a == k;
      if (!known) {
        std::string list;
        for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        return fail(key, join(field, k), "unknown key (expected one of: " + list + ")");
      }
      if (!seen.insert(k).second) return fail(key, join(field, k), "given twice");
    }
    return true;
  }

  bool uint_in(const YAML::Node& n, const std::string& field, int64_t lo, int64_t hi,
               std::string_view unit, uint32_t& out) {
    const std::string range = std::to_string(lo) + "-" + std::to_string(hi) +
                              (unit.empty() ? "" : " " + std::string(unit));
    int64_t v = 0;
    const std::string text = n.IsScalar() ? n.Scalar() : std::string();
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (!n.IsScalar() || text.empty() || ec != std::errc() || end != text.data() + text.size() ||
        v < lo || v > hi)
      return fail(n, field, "must be " + range + ", got " + describe_yaml(n));
    out = uint32_t(v);
    return true;
  }

  bool text(const YAML::Node& n, const std::string& field, std::string& out) {
    if (!n.IsScalar() || n.Scalar().empty())
      return fail(n, field, "must be a non-empty string, got " + describe_yaml(n));
    out = n.Scalar();
    return true;
  }

  bool boolean(const YAML::Node& n, const std::string& field, bool& out) {
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, out))
      return fail(n, field, "must be true or false, got " + describe_yaml(n));
    return true;
  }

  // A list of non-empty strings; a single string counts as a list of one.
  bool text_list(const YAML::Node& n, const std::string& field, std::vector<std::string>& out) {
    if (n.IsScalar() && !n.Scalar().empty()) {
      out.push_back(n.Scalar());
      return true;
    }
    if (!n.IsSequence()) return fail(n, field, "must be a list of strings, got " + describe_yaml(n));
    for (size_t i = 0; i < n.size(); ++i) {
      std::string item;
      if (!text(n[i], field + "[" + std::to_string(i) + "]", item)) return false;
      out.push_back(std::move(item));
    }
    return true;
  }

  bool text_map(const YAML::Node& n, const std::string& field,
                std::map<std::string, std::string>& out) {
    if (!n.IsMap()) return fail(n, field, "must be a map of names to strings, got " + describe_yaml(n));
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar() || it->first.Scalar().empty())
        return fail(it->first, field, "keys must be names, got " + describe_yaml(it->first));
      const std::string key = it->first.Scalar();
      if (!it->second.IsScalar())
        return fail(it->second, join(field, key), "must be a string, got " + describe_yaml(it->second));
      if (!out.emplace(key, it->second.Scalar()).second)
        return fail(it->first, join(field, key), "given twice");
    }
    return true;
  }

  static std::string join(const std::string& a, const std::string& b) { return a + "." + b; }

 private:
  const std::string& file_;
  std::optional<manifest_error> error_;
};

bool parse_runtime(std::string_view s, proto::Runtime& out) {
  if (s == "python3") out = proto::Runtime::python3;
  else if (s == "nodejs") out = proto::Runtime::nodejs;
  else if (s == "native") out = proto::Runtime::native;
  else if (s == "exec") out = proto::Runtime::exec;
  else return false;
  return true;
}

bool parse_triggers(checker& c, const YAML::Node& n, const std::string& field, function_def& d) {
  if (!n.IsMap()) return c.fail(n, field, "must be a map (http, cron, events, files), got " + describe_yaml(n));
  if (!c.keys(n, field, {"http", "cron", "events", "files"})) return false;
  if (n["http"] && !c.boolean(n["http"], field + ".http", d.http)) return false;
  if (n["cron"]) {
    if (!c.text_list(n["cron"], field + ".cron", d.cron)) return false;
    for (size_t i = 0; i < d.cron.size(); ++i)
      if (auto parsed = cron::schedule::parse(d.cron[i]); !parsed) {
        const YAML::Node item = n["cron"].IsSequence() ? n["cron"][i] : n["cron"];
        return c.fail(item, field + ".cron[" + std::to_string(i) + "]", parsed.error());
      }
  }
  if (n["events"]) {
    if (!c.text_list(n["events"], field + ".events", d.events)) return false;
    for (size_t i = 0; i < d.events.size(); ++i) {
      const YAML::Node item = n["events"].IsSequence() ? n["events"][i] : n["events"];
      const std::string f = field + ".events[" + std::to_string(i) + "]";
      if (d.events[i].starts_with("fnmesh."))
        return c.fail(item, f, "give the subject without the fnmesh.events. prefix, got " + d.events[i]);
      if (!valid_event_subject(d.events[i]))
        return c.fail(item, f, "must be a NATS subject (tokens separated by '.', '*' or a final '>'), got " + d.events[i]);
    }
  }
  if (n["files"] && !c.text_list(n["files"], field + ".files", d.files)) return false;
  return true;
}

// An allow-list entry as numeric entries: itself, or every address its host name has now
// (resolved at deploy: the node hands addresses to the kernel, which cannot resolve).
std::expected<std::vector<std::string>, std::string> resolve_allow_entry(const std::string& text) {
  auto numeric = parse_allow_entry(text);
  if (numeric) return std::vector<std::string>{to_string(*numeric)};
  auto parts = split_allow_entry(text);
  if (!parts) return std::unexpected(parts.error());
  const std::string& host = parts->host;
  // An address (IPv6, or digits and dots) that did not parse: what is wrong is said already.
  if (host.find(':') != std::string::npos || host.find_first_not_of("0123456789.") == std::string::npos)
    return std::unexpected(numeric.error());
  const bool name = std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
  if (!name) return std::unexpected(host + " is neither an IP address nor a host name");
  if (parts->prefix >= 0) return std::unexpected("a prefix length goes with an address, not with host name " + host);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int r = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); r != 0)
    return std::unexpected("cannot resolve host name " + host + ": " + ::gai_strerror(r));
  std::vector<std::string> out;
  const std::string port = parts->port ? ":" + std::to_string(parts->port) : "";
  for (const addrinfo* a = found; a; a = a->ai_next) {
    char address[INET6_ADDRSTRLEN] = {};
    const void* bytes = a->ai_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr)
                                                 : &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr;
    if (!::inet_ntop(a->ai_family, bytes, address, sizeof address)) continue;
    auto e = parse_allow_entry(a->ai_family == AF_INET6 && parts->port ? "[" + std::string(address) + "]" + port
                                                                        : address + port);
    if (e && std::find(out.begin(), out.end(), to_string(*e)) == out.end()) out.push_back(to_string(*e));
  }
  ::freeaddrinfo(found);
  if (out.empty()) return std::unexpected("host name " + host + " has no IP address");
  return out;
}

bool parse_network(checker& c, const YAML::Node& n, const std::string& field, function_def& d) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    if (s == "none") d.network = proto::NetworkPolicy::none;
    else if (s == "loopback") d.network = proto::NetworkPolicy::loopback;
    else if (s == "host") d.network = proto::NetworkPolicy::host;
    else return c.fail(n, field, "must be none, loopback, host or a list of allowed host:port/CIDR, got " + s);
    return true;
  }
  if (!n.IsSequence())
    return c.fail(n, field, "must be none, loopback, host or a list of allowed host:port/CIDR, got " + describe_yaml(n));
  if (n.size() == 0) return c.fail(n, field, "the allow-list is empty (use none)");
  std::vector<std::string> entries;
  if (!c.text_list(n, field, entries)) return false;
  for (size_t i = 0; i < entries.size(); ++i) {
    auto resolved = resolve_allow_entry(entries[i]);
    if (!resolved)
      return c.fail(n[i], field + "[" + std::to_string(i) + "]",
                    resolved.error() + " (entries are address[/prefix][:port], [IPv6 address[/prefix]]:port "
                                       "or host:port), got " + entries[i]);
    for (auto& e : *resolved)
      if (std::find(d.allow.begin(), d.allow.end(), e) == d.allow.end()) d.allow.push_back(std::move(e));
  }
  if (d.allow.size() > max_allow_entries)
    return c.fail(n, field, "has " + std::to_string(d.allow.size()) + " entries once host names are resolved; at most " +
                                std::to_string(max_allow_entries));
  d.network = proto::NetworkPolicy::allow_list;
  return true;
}

bool parse_function(checker& c, const YAML::Node& key, const YAML::Node& n, const std::string& tenant,
                    function_def& d) {
  d.line = key.Mark().line + 1;
  d.name = key.IsScalar() ? key.Scalar() : std::string();
  d.tenant = tenant;
  const std::string field = "functions." + d.name;
  if (!valid_name(d.name))
    return c.fail(key, field, "function names are 1-63 of [a-z0-9-], starting with a letter or digit");
  if (!n.IsMap()) return c.fail(n, field, "must be a map of settings (runtime, handler, ...), got " + describe_yaml(n));
  if (!c.keys(n, field,
              {"runtime", "handler", "memory", "timeout", "concurrency", "tmp", "pids", "cpu_budget_ms", "env", "network", "retries",
               "retry_delay", "max_event_age", "labels", "triggers"}))
    return false;

  if (!n["runtime"]) return c.fail_at(d.line, field + ".runtime", "missing (python3, nodejs, native or exec)");
  if (!n["runtime"].IsScalar() || !parse_runtime(n["runtime"].Scalar(), d.runtime))
    return c.fail(n["runtime"], field + ".runtime",
                  "must be python3, nodejs, native or exec, got " + describe_yaml(n["runtime"]));

  if (!n["handler"]) return c.fail_at(d.line, field + ".handler", "missing");
  if (!c.text(n["handler"], field + ".handler", d.handler)) return false;
  d.handler_line = n["handler"].Mark().line + 1;
  if (d.runtime == proto::Runtime::python3 || d.runtime == proto::Runtime::nodejs) {
    const auto parts = split(d.handler, '.');
    bool ok = parts.size() >= 2;
    for (const auto& p : parts) ok = ok && identifier(p);
    if (!ok)
      return c.fail(n["handler"], field + ".handler",
                    std::string("must be ") +
                        (d.runtime == proto::Runtime::python3 ? "module.function" : "file.export") +
                        ", got " + d.handler);
  }

  if (n["memory"] && !c.uint_in(n["memory"], field + ".memory", 128, 10240, "MB", d.memory_mb)) return false;
  if (n["timeout"] && !c.uint_in(n["timeout"], field + ".timeout", 1, 900, "s", d.timeout_s)) return false;
  if (n["concurrency"] &&
      !c.uint_in(n["concurrency"], field + ".concurrency", 0, 100000, "", d.concurrency))
    return false;
  if (n["retries"] && !c.uint_in(n["retries"], field + ".retries", 0, 10, "", d.retries)) return false;
  if (n["retry_delay"] && !c.uint_in(n["retry_delay"], field + ".retry_delay", 1, 3600, "s", d.retry_delay_s))
    return false;
  if (n["max_event_age"] &&
      !c.uint_in(n["max_event_age"], field + ".max_event_age", 1, 21600, "s", d.max_event_age_s))
    return false;
  if (n["tmp"] && !c.uint_in(n["tmp"], field + ".tmp", 1, 10240, "MB", d.tmp_mb)) return false;
  if (n["pids"] && !c.uint_in(n["pids"], field + ".pids", 16, 32768, "", d.pids)) return false;
  if (n["cpu_budget_ms"] &&
      !c.uint_in(n["cpu_budget_ms"], field + ".cpu_budget_ms", 1, 5'400'000, "ms", d.cpu_budget_ms))  // 900 s x 6 vCPUs
    return false;
  if (n["env"]) {
    if (!c.text_map(n["env"], field + ".env", d.env)) return false;
    for (auto it = n["env"].begin(); it != n["env"].end(); ++it)
      if (!identifier(it->first.Scalar()))
        return c.fail(it->first, field + ".env." + it->first.Scalar(),
                      "environment variable names are letters, digits and _");
  }
  if (n["labels"] && !c.text_map(n["labels"], field + ".labels", d.labels)) return false;
  if (n["network"] && !parse_network(c, n["network"], field + ".network", d)) return false;
  if (n["triggers"] && !parse_triggers(c, n["triggers"], field + ".triggers", d)) return false;
  return true;
}

}  // namespace

std::string manifest_error::what() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!field.empty()) out += field + ": ";
  return out + message;
}

parsed<std::vector<function_def>> parse_text(std::string_view yaml, const std::string& file) {
  YAML::Node loaded;
  try {
    loaded = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    return std::unexpected(manifest_error{file, line, "", "not valid YAML: " + e.msg});
  }
  const YAML::Node& root = loaded;
  checker c(file);
  if (!root || root.IsNull())
    return std::unexpected(manifest_error{file, 0, "", "empty manifest (declare functions: ...)"});
  if (!root.IsMap()) {
    c.fail(root, "", "must be a map with functions:, got " + describe_yaml(root));
    return std::unexpected(c.error());
  }
  if (!c.keys(root, "", {"functions", "tenant"})) {
    // Top-level unknown keys carry no leading dot.
    manifest_error e = c.error();
    if (e.field.starts_with('.')) e.field.erase(0, 1);
    return std::unexpected(e);
  }
  std::string tenant = "default";
  if (root["tenant"]) {
    if (!c.text(root["tenant"], "tenant", tenant)) return std::unexpected(c.error());
    if (!valid_name(tenant)) {
      c.fail(root["tenant"], "tenant", "tenant names are 1-63 of [a-z0-9-], got " + tenant);
      return std::unexpected(c.error());
    }
  }
  const YAML::Node functions = root["functions"];
  if (!functions) {
    c.fail_at(1, "functions", "missing (declare each function under functions:)");
    return std::unexpected(c.error());
  }
  if (!functions.IsMap() || functions.size() == 0) {
    c.fail(functions, "functions", "must be a map of function names to settings, got " + describe_yaml(functions));
    return std::unexpected(c.error());
  }
  std::vector<function_def> out;
  std::set<std::string> names;
  for (auto it = functions.begin(); it != functions.end(); ++it) {
    function_def d;
    if (!parse_function(c, it->first, it->second, tenant, d)) return std::unexpected(c.error());
    if (!names.insert(d.name).second) {
      c.fail(it->first, "functions." + d.name, "declared twice");
      return std::unexpected(c.error());
    }
    out.push_back(std::move(d));
  }
  return out;
}

parsed<std::vector<function_def>> parse_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const std::error_code ec(errno, std::system_category());
    return std::unexpected(manifest_error{path.string(), 0, "", "cannot read: " + ec.message()});
  }
  std::ostringstream text;
  text << in.rdbuf();
  auto defs = parse_text(text.str(), path.string());
  if (!defs) return defs;
  // Watched folders are relative to the manifest's folder; the adapter needs them whole.
  const auto folder = std::filesystem::absolute(path).parent_path();
  for (auto& d : *defs)
    for (auto& f : d.files) f = (folder / f).lexically_normal().string();
  return defs;
}

std::filesystem::path find_in_folder(const std::filesystem::path& folder) {
  const auto yml = folder / file_name;
  if (std::filesystem::exists(yml)) return yml;
  const auto yaml = folder / "fnmesh.yaml";
  if (std::filesystem::exists(yaml)) return yaml;
  return yml;
}

parsed<void> check_folder(const std::vector<function_def>& defs,
                          const std::filesystem::path& folder, const std::string& file) {
  namespace fs = std::filesystem;
  for (const auto& d : defs) {
    const std::string field = "functions." + d.name + ".handler";
    if (d.runtime == proto::Runtime::python3) {
      std::string module = d.handler.substr(0, d.handler.rfind('.'));
      for (char& ch : module)
        if (ch == '.') ch = '/';
      if (!fs::exists(folder / (module + ".py")) && !fs::exists(folder / module / "__init__.py"))
        return std::unexpected(manifest_error{
            file, d.handler_line, field, "module " + module + ".py not found in " + folder.string()});
    } else if (d.runtime == proto::Runtime::native) {
      const auto program = words(d.handler).at(0);
      if (!program.starts_with('/')) {
        const fs::path p = folder / program;
        if (!fs::is_regular_file(p) || ::access(p.c_str(), X_OK) != 0)
          return std::unexpected(manifest_error{
              file, d.handler_line, field,
              "program " + program + " not found (or not executable) in " + folder.string()});
      }
    }
  }
  return {};
}

std::vector<uint8_t> encode_spec(const function_def& def, std::string_view code_digest,
                                 std::string_view version) {
  flatbuffers::FlatBufferBuilder b(1024);
  auto pairs = [&b](const std::map<std::string, std::string>& m) {
    std::vector<flatbuffers::Offset<proto::KeyValue>> v;
    for (const auto& [k, val] : m)  // std::map order is the byte order FlatBuffers keys use
      v.push_back(proto::CreateKeyValue(b, b.CreateString(k), b.CreateString(val)));
    return b.CreateVector(v);
  };
  auto strings = [&b](const std::vector<std::string>& v) { return b.CreateVectorOfStrings(v); };

  const auto name = b.CreateString(def.name);
  const auto ver = b.CreateString(version);
  const auto tenant = b.CreateString(def.tenant);
  const auto handler = b.CreateString(def.handler);
  const auto env = pairs(def.env);
  const auto allow = strings(def.allow);
  const auto labels = pairs(def.labels);
  const auto triggers = proto::CreateTriggers(b, def.http, strings(def.cron), strings(def.events),
                                              strings(def.files));
  const auto digest = b.CreateString(code_digest);

  proto::FunctionSpecBuilder spec(b);
  spec.add_name(name);
  spec.add_version(ver);
  spec.add_tenant(tenant);
  spec.add_runtime(def.runtime);
  spec.add_handler(handler);
  spec.add_memory_mb(def.memory_mb);
  spec.add_timeout_s(def.timeout_s);
  spec.add_concurrency(def.concurrency);
  spec.add_env(env);
  spec.add_network(def.network);
  spec.add_allow(allow);
  spec.add_retries(def.retries);
  spec.add_retry_delay_s(def.retry_delay_s);
  spec.add_max_event_age_s(def.max_event_age_s);
  spec.add_labels(labels);
  spec.add_triggers(triggers);
  spec.add_code_digest(digest);
  spec.add_tmp_mb(def.tmp_mb);
  spec.add_pids_max(def.pids);
  spec.add_cpu_budget_ms(def.cpu_budget_ms);
  b.Finish(spec.Finish());
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

}  // namespace fnmesh::manifest
