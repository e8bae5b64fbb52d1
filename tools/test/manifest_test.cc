#include "tools/manifest.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace fnmesh::manifest {
namespace {

constexpr std::string_view full = R"(tenant: acme
functions:
  resize:
    runtime: python3
    handler: handler.handle
    memory: 256
    timeout: 30
    concurrency: 10
    tmp: 2048
    pids: 64
    cpu_budget_ms: 1500
    env: {QUALITY: "80", MODE: fast}
    network: ["[2001:db8::1]:443", 10.0.0.0/8, 10.0.0.0/8]
    retries: 1
    retry_delay: 5
    max_event_age: 600
    labels: {zone: a}
    triggers:
      http: false
      cron: ["*/5 * * * *"]
      events: ["images.uploaded", "images.*", "orders.>"]
      files: ["./inbox"]
  echo:
    runtime: native
    handler: echo
)";

// Parses `yaml` and returns the error text, or "" when it parsed.
std::string error_of(std::string_view yaml) {
  auto parsed = parse_text(yaml, "f/fnmesh.yml");
  return parsed ? std::string() : parsed.error().what();
}

TEST(manifest, parses_every_field) {
  auto parsed = parse_text(full, "fnmesh.yml");
  ASSERT_TRUE(parsed) << parsed.error().what();
  ASSERT_EQ(parsed->size(), 2u);
  const function_def& r = (*parsed)[0];
  EXPECT_EQ(r.name, "resize");
  EXPECT_EQ(r.tenant, "acme");
  EXPECT_EQ(r.runtime, proto::Runtime::python3);
  EXPECT_EQ(r.handler, "handler.handle");
  EXPECT_EQ(r.memory_mb, 256u);
  EXPECT_EQ(r.tmp_mb, 2048u);
  EXPECT_EQ(r.pids, 64u);
  EXPECT_EQ(r.cpu_budget_ms, 1500u);
  EXPECT_EQ(r.timeout_s, 30u);
  EXPECT_EQ(r.concurrency, 10u);
  EXPECT_EQ(r.env.at("QUALITY"), "80");
  EXPECT_EQ(r.network, proto::NetworkPolicy::allow_list);
  EXPECT_EQ(r.allow, (std::vector<std::string>{"[2001:db8::1]:443", "10.0.0.0/8"}));  // once each
  EXPECT_EQ(r.retries, 1u);
  EXPECT_EQ(r.retry_delay_s, 5u);
  EXPECT_EQ(r.max_event_age_s, 600u);
  EXPECT_EQ(r.labels.at("zone"), "a");
  EXPECT_FALSE(r.http);
  EXPECT_EQ(r.cron.size(), 1u);
  EXPECT_EQ(r.events.size(), 3u);
  EXPECT_EQ(r.files, std::vector<std::string>{"./inbox"});
  EXPECT_EQ(r.line, 3);
  EXPECT_EQ(r.handler_line, 5);

  const function_def& e = (*parsed)[1];
  EXPECT_EQ(e.runtime, proto::Runtime::native);
  EXPECT_EQ(e.memory_mb, 128u);
  EXPECT_EQ(e.tmp_mb, 512u);
  EXPECT_EQ(e.pids, 256u);
  EXPECT_EQ(e.timeout_s, 3u);
  EXPECT_EQ(e.retries, 2u);
  EXPECT_EQ(e.retry_delay_s, 60u);         // Lambda: 1 min, then 2 min
  EXPECT_EQ(e.max_event_age_s, 21600u);    // Lambda: 6 h
  EXPECT_TRUE(e.http);
  EXPECT_EQ(e.network, proto::NetworkPolicy::none);
}

TEST(manifest, encodes_a_verifiable_spec) {
  auto parsed = parse_text(full, "fnmesh.yml");
  ASSERT_TRUE(parsed);
  const auto buffer = encode_spec((*parsed)[0], "abc123", "v1");
  const auto* spec = proto::verified<proto::FunctionSpec>(buffer);
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(proto::view(spec->name()), "resize");
  EXPECT_EQ(proto::view(spec->tenant()), "acme");
  EXPECT_EQ(proto::view(spec->version()), "v1");
  EXPECT_EQ(proto::view(spec->code_digest()), "abc123");
  EXPECT_EQ(spec->memory_mb(), 256u);
  EXPECT_EQ(spec->tmp_mb(), 2048u);
  EXPECT_EQ(spec->pids_max(), 64u);
  EXPECT_EQ(spec->cpu_budget_ms(), 1500u);
  EXPECT_EQ(spec->timeout_s(), 30u);
  EXPECT_EQ(spec->retries(), 1u);
  EXPECT_EQ(spec->retry_delay_s(), 5u);
  EXPECT_EQ(spec->max_event_age_s(), 600u);
  EXPECT_EQ(spec->network(), proto::NetworkPolicy::allow_list);
  ASSERT_NE(spec->env(), nullptr);
  ASSERT_NE(spec->env()->LookupByKey("QUALITY"), nullptr);
  EXPECT_EQ(proto::view(spec->env()->LookupByKey("QUALITY")->value()), "80");
  ASSERT_NE(spec->triggers(), nullptr);
  EXPECT_FALSE(spec->triggers()->http());
  EXPECT_EQ(spec->triggers()->events()->size(), 3u);
  // The same input gives the same bytes (versions are hashes of the spec).
  EXPECT_EQ(buffer, encode_spec((*parsed)[0], "abc123", "v1"));
}

TEST(manifest, tenant_defaults_to_default) {
  auto parsed = parse_text("functions:\n  a:\n    runtime: exec\n    handler: ./run\n", "x");
  ASSERT_TRUE(parsed);
  EXPECT_EQ((*parsed)[0].tenant, "default");
}

TEST(manifest, memory_out_of_range_names_file_line_and_field) {
  EXPECT_EQ(error_of("functions:\n  hello:\n    runtime: python3\n    memory: 64\n    handler: h.handle\n"),
            "f/fnmesh.yml:4: functions.hello.memory: must be 128-10240 MB, got 64");
}

TEST(manifest, each_bad_field_names_its_line) {
  const std::string head = "functions:\n  hello:\n    runtime: python3\n    handler: h.handle\n";
  // line 5 is the bad one in each case
  struct bad_case {
    std::string line;
    std::string field;
  };
  const std::vector<bad_case> cases = {
      {"    timeout: 901", "functions.hello.timeout: must be 1-900 s, got 901"},
      {"    tmp: 20000", "functions.hello.tmp: must be 1-10240 MB, got 20000"},
      {"    pids: 4", "functions.hello.pids: must be 16-32768, got 4"},
      {"    timeout: soon", "functions.hello.timeout: must be 1-900 s, got soon"},
      {"    memory: 12.5", "functions.hello.memory: must be 128-10240 MB, got 12.5"},
      {"    concurrency: -1", "functions.hello.concurrency: must be 0-100000, got -1"},
      {"    retries: 11", "functions.hello.retries: must be 0-10, got 11"},
      {"    retry_delay: 0", "functions.hello.retry_delay: must be 1-3600 s, got 0"},
      {"    max_event_age: 7h", "functions.hello.max_event_age: must be 1-21600 s, got 7h"},
      {"    network: internet", "functions.hello.network: must be none, loopback, host or a list"},
      {"    network: []", "functions.hello.network: the allow-list is empty"},
      {"    network: [10.0.0.1:99999]", "functions.hello.network[0]: port 99999 is not 1-65535 (entries are"},
      {"    network: [10.0.0.0/33]", "functions.hello.network[0]: prefix length 33 is not 0-32"},
      {"    network: [\"10.0.0.1 80\"]", "functions.hello.network[0]: the entry has a space in it"},
      {"    network: [\"[::1\"]", "functions.hello.network[0]: '[' without ']'"},
      {"    network: [nope.invalid:443]", "functions.hello.network[0]: cannot resolve host name nope.invalid"},
      {"    network: [example.com/24]", "functions.hello.network[0]: a prefix length goes with an address"},
      {"    network: [exa_mple.com]", "functions.hello.network[0]: exa_mple.com is neither an IP address"},
      {"    env: [A, B]", "functions.hello.env: must be a map"},
      {"    env: {1X: y}", "functions.hello.env.1X: environment variable names"},
      {"    labels: {zone: [a]}", "functions.hello.labels.zone: must be a string"},
      {"    triggers: {http: maybe}", "functions.hello.triggers.http: must be true or false, got maybe"},
      {"    triggers: {cron: [\"* * *\"]}", "functions.hello.triggers.cron[0]: must be a cron expression of 5 fields"},
      {"    triggers: {cron: [\"0 24 * * *\"]}", "functions.hello.triggers.cron[0]: hour: 24 is out of range 0-23"},
      {"    triggers: {cron: [\"@daily\", \"* * * * mon-foo\"]}",
       "functions.hello.triggers.cron[1]: day-of-week: 'foo' is neither a number nor a name (sun-sat)"},
      {"    triggers: {cron: \"@every 0s\"}", "functions.hello.triggers.cron[0]: @every: 0s is below the minimum of 1s"},
      {"    triggers: {events: [\"a..b\"]}", "functions.hello.triggers.events[0]: must be a NATS subject"},
      {"    triggers: {events: [\"a.>.b\"]}", "functions.hello.triggers.events[0]: must be a NATS subject"},
      {"    triggers: {events: [fnmesh.events.x]}", "functions.hello.triggers.events[0]: give the subject without"},
      {"    triggers: {webhook: true}", "functions.hello.triggers.webhook: unknown key"},
      {"    memroy: 256", "functions.hello.memroy: unknown key (expected one of: runtime, handler"},
      {"    runtime: exec", "functions.hello.runtime: given twice"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(head + c.line + "\n");
    EXPECT_TRUE(err.starts_with("f/fnmesh.yml:5: " + c.field)) << c.line << " -> " << err;
  }
}

TEST(manifest, cron_takes_every_form_the_adapter_runs) {
  auto parsed = parse_text("functions:\n  a:\n    runtime: exec\n    handler: x\n    triggers:\n      cron:\n"
                           "        - \"*/5 * * * *\"\n        - \"0 9 * jan-jun mon-fri\"\n        - \"@hourly\"\n"
                           "        - \"@every 1h30m\"\n", "f");
  ASSERT_TRUE(parsed) << parsed.error().what();
  EXPECT_EQ((*parsed)[0].cron,
            (std::vector<std::string>{"*/5 * * * *", "0 9 * jan-jun mon-fri", "@hourly", "@every 1h30m"}));
  const std::string err = error_of("functions:\n  a:\n    runtime: exec\n    handler: x\n    triggers:\n      cron:\n"
                                   "        - \"@hourly\"\n        - \"*/0 * * * *\"\n");
  EXPECT_EQ(err, "f/fnmesh.yml:8: functions.a.triggers.cron[1]: minute: step 0 must be 1 or more");
}

TEST(manifest, allow_list_host_names_are_resolved_at_deploy) {
  auto parsed = parse_text("functions:\n  a:\n    runtime: exec\n    handler: x\n    network: [localhost:8080]\n", "f");
  ASSERT_TRUE(parsed) << parsed.error().what();
  const auto& allow = (*parsed)[0].allow;
  EXPECT_NE(std::find(allow.begin(), allow.end(), "127.0.0.1:8080"), allow.end()) << ::testing::PrintToString(allow);
}

TEST(manifest, an_allow_list_has_at_most_64_entries) {
  std::string list;
  for (int i = 0; i < 65; ++i) list += (i ? ", " : "") + std::string("10.0.0.") + std::to_string(i);
  EXPECT_EQ(error_of("functions:\n  a:\n    runtime: exec\n    handler: x\n    network: [" + list + "]\n"),
            "f/fnmesh.yml:5: functions.a.network: has 65 entries once host names are resolved; at most 64");
}

TEST(manifest, bad_runtime_handler_and_names) {
  EXPECT_EQ(error_of("functions:\n  hello:\n    runtime: ruby\n    handler: h.handle\n"),
            "f/fnmesh.yml:3: functions.hello.runtime: must be python3, nodejs, native or exec, got ruby");
  EXPECT_EQ(error_of("functions:\n  hello:\n    runtime: python3\n    handler: handle\n"),
            "f/fnmesh.yml:4: functions.hello.handler: must be module.function, got handle");
  EXPECT_EQ(error_of("functions:\n  hello:\n    runtime: python3\n"),
            "f/fnmesh.yml:2: functions.hello.handler: missing");
  EXPECT_EQ(error_of("functions:\n  hello:\n    handler: h.handle\n"),
            "f/fnmesh.yml:2: functions.hello.runtime: missing (python3, nodejs, native or exec)");
  EXPECT_TRUE(error_of("functions:\n  Hello_World:\n    runtime: exec\n    handler: x\n")
                  .starts_with("f/fnmesh.yml:2: functions.Hello_World: function names are"));
  EXPECT_TRUE(error_of("tenant: ACME\nfunctions:\n  a:\n    runtime: exec\n    handler: x\n")
                  .starts_with("f/fnmesh.yml:1: tenant: tenant names are"));
}

TEST(manifest, unknown_top_level_key_and_missing_functions) {
  EXPECT_TRUE(error_of("functions:\n  a:\n    runtime: exec\n    handler: x\nversion: 2\n")
                  .starts_with("f/fnmesh.yml:5: version: unknown key"));
  EXPECT_TRUE(error_of("tenant: a\n").starts_with("f/fnmesh.yml:1: functions: missing"));
  EXPECT_TRUE(error_of("functions: {}\n").starts_with("f/fnmesh.yml:1: functions: must be a map"));
  EXPECT_TRUE(error_of("").starts_with("f/fnmesh.yml: empty manifest"));
  EXPECT_TRUE(error_of("- a\n- b\n").starts_with("f/fnmesh.yml:1: must be a map"));
}

TEST(manifest, bad_yaml_syntax_names_its_line) {
  const std::string err =
      error_of("functions:\n  hello:\n    runtime: python3\n    handler: [h.handle\n    memory: 128\n");
  EXPECT_TRUE(err.starts_with("f/fnmesh.yml:")) << err;
  EXPECT_NE(err.find("not valid YAML"), std::string::npos) << err;
  const int line = std::stoi(err.substr(err.find(':') + 1));
  EXPECT_GE(line, 4) << err;

  const std::string seq_err = error_of("functions:\n  hello:\n    runtime: python3\n  - bad\n");
  EXPECT_TRUE(seq_err.starts_with("f/fnmesh.yml:4: not valid YAML")) << seq_err;
}

TEST(manifest, parse_file_and_check_folder) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("manifest_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "fnmesh.yml") << "functions:\n  hello:\n    runtime: python3\n    handler: handler.handle\n";
  const auto path = find_in_folder(dir);
  auto parsed = parse_file(path);
  ASSERT_TRUE(parsed) << parsed.error().what();
  auto missing = check_folder(*parsed, dir, path.string());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().what(),
            path.string() + ":4: functions.hello.handler: module handler.py not found in " + dir.string());
  std::ofstream(dir / "handler.py") << "def handle(event, ctx):\n    return event\n";
  EXPECT_TRUE(check_folder(*parsed, dir, path.string()));

  auto absent = parse_file(dir / "nope.yml");
  ASSERT_FALSE(absent);
  EXPECT_NE(absent.error().what().find("nope.yml: cannot read"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(manifest, watched_folders_are_relative_to_the_manifest) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("manifest_files_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "fnmesh.yml") << "functions:\n  f:\n    runtime: python3\n    handler: h.h\n"
                                       "    triggers: {files: [./inbox, ../out/, /var/drop]}\n";
  auto parsed = parse_file(dir / "fnmesh.yml");
  ASSERT_TRUE(parsed) << parsed.error().what();
  EXPECT_EQ(parsed->at(0).files,
            (std::vector<std::string>{(dir / "inbox").string(),
                                      (dir.parent_path() / "out/").string(), "/var/drop"}));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fnmesh::manifest
