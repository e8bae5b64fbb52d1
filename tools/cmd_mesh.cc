// fnmesh up | down | status: the local mesh under $FNMESH_HOME.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "broker/client/subjects.h"
#include "broker/client/topology.h"
#include "common/clock.h"
#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "tools/cli.h"
#include "tools/mesh.h"

namespace fnmesh::cli {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using json = nlohmann::json;

struct up_options {
  std::string ports;
  unsigned cluster = 1;        // nats-servers: 1, or a JetStream cluster of 3
  unsigned nodes = 1;
  int nats_port = 4222;        // the first server's; a cluster's others follow it
  int nats_route_port = 6222;  // a cluster's routes, likewise
  int collector_port = 7700;
  int collector_http_port = 7701;
  int http_port = 8080;
  unsigned slots = 0;
  bool no_bpf = false;
  int wait_s = 30;
};

// 16 random bytes in hex.
result<std::string> random_hex() {
  unsigned char bytes[16];
  std::ifstream random("/dev/urandom", std::ios::binary);
  if (!random.read(reinterpret_cast<char*>(bytes), sizeof bytes)) return fail_errno(errno);
  std::string hex;
  for (unsigned char b : bytes) hex += "0123456789abcdef"[b >> 4], hex += "0123456789abcdef"[b & 15];
  return hex;
}

// `text` as `file`, readable by the owner only.
result<void> write_secret(const fs::path& file, const std::string& text) {
  const fs::path tmp = file.string() + ".tmp";
  ::unlink(tmp.c_str());  // a leftover could have other permissions
  unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd || ::write(fd.get(), text.data(), text.size()) != ssize_t(text.size()) ||
      ::close(fd.release()) != 0 || ::rename(tmp.c_str(), file.c_str()) != 0)
    return fail_errno(errno);
  return {};
}

// The http adapter's API keys for this mesh home: made once (tenant default, one random
// key), readable by the owner only. Returns the default tenant's first key.
result<std::string> ensure_api_keys(const fs::path& file) {
  if (!fs::exists(file)) {
    auto key = random_hex();
    if (!key) return std::unexpected(key.error());
    auto written = write_secret(file, "# fnmesh-http API keys: tenant: [keys] (Authorization: Bearer <key>)\n"
                                      "default: [fnk-" + *key + "]\n");
    if (!written) return std::unexpected(written.error());
  }
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("default: [")) return line.substr(10, line.find_first_of(",]") - 10);
  return std::string();
}

// The collector's query tokens, written at every `up`: the admin token (the CLI's, sees
// every tenant), made once and then kept, and the default tenant's current API key, so
// that the key also reads its own billing and a key replaced in api-keys.yml stops.
result<void> write_collector_tokens(const fs::path& file, const std::string& default_key) {
  std::string admin;
  std::ifstream in(file);
  for (std::string line; admin.empty() && std::getline(in, line);)
    if (line.starts_with("admin: [")) admin = line.substr(8, line.find_first_of(",]") - 8);
  if (admin.empty()) {
    auto made = random_hex();
    if (!made) return std::unexpected(made.error());
    admin = *made;
  }
  return write_secret(file, "# fnmesh-collector query tokens: tenant: [tokens] (Authorization: Bearer "
                            "<token>); admin sees every tenant\nadmin: [" + admin + "]\n" +
                            (default_key.empty() ? "" : "default: [" + default_key + "]\n"));
}

// nats-server `name`'s config: payloads up to 6 MiB fit in one message (DESIGN §2); in a
// cluster (route_ports not empty) it is member `index`, routed to every member on loopback,
// as broker/nats/cluster-*.conf.
void write_nats_config(const fs::path& file, const std::string& name, const std::vector<int>& route_ports,
                       size_t index) {
  std::ofstream out(file);
  out << "# written by fnmesh up\nserver_name: " << name << "\nmax_payload: 8388608\n";
  if (route_ports.empty()) return;
  out << "cluster {\n  name: fnmesh\n  listen: 127.0.0.1:" << route_ports[index] << "\n  routes: [\n";
  for (int port : route_ports) out << "    nats-route://127.0.0.1:" << port << "\n";
  out << "  ]\n}\n";
}

// Polls `ready` until it holds, `running` fails, or the time is up.
template <class Ready, class Running>
bool wait_for(Ready ready, Running running, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    if (!running()) return false;
    std::this_thread::sleep_for(50ms);
  }
  return ready();
}

// The mesh being started: owns the list of daemons started so far, written to status.json
// after every step so that `down` can always clean up. Used by `up` on the main thread.
class mesh_start {
 public:
  mesh_start(fs::path home, json endpoints) : home_(std::move(home)), endpoints_(std::move(endpoints)) {}

  fs::path log(std::string_view name) const { return home_ / "logs" / (std::string(name) + ".log"); }

  result<void> start(daemon_process d) {
    if (auto ok = spawn(d, log(d.name)); !ok) return ok;
    std::ofstream(home_ / "run" / (d.name + ".pid")) << d.pid << "\n";
    started_.push_back(std::move(d));
    write(false);
    return {};
  }
  const daemon_process& last() const { return started_.back(); }
  const std::vector<daemon_process>& started() const { return started_; }

  // Prints why `name` failed with its log tail, stops what runs; returns 1.
  int abort(const std::string& name, const std::string& why) {
    std::fprintf(stderr, "fnmesh: %s %s; last lines of %s:\n%s", name.c_str(), why.c_str(),
                 log(name).c_str(), tail(log(name), 20).c_str());
    for (auto it = started_.rbegin(); it != started_.rend(); ++it) {
      stop(it->pid, it->binary, 5s);
      fs::remove(home_ / "run" / (it->name + ".pid"));
    }
    fs::remove(home_ / "status.json");
    return 1;
  }

  void write(bool ready) const {
    json status = endpoints_;
    status["home"] = home_.string();
    status["ready"] = ready;
    status["started_ns"] = unix_now_ns();
    status["components"] = json::array();
    for (const auto& d : started_)
      status["components"].push_back({{"name", d.name},
                                      {"pid", d.pid},
                                      {"endpoint", d.endpoint},
                                      {"binary", d.binary.string()},
                                      {"log", log(d.name).string()}});
    const fs::path tmp = home_ / "status.json.tmp";
    std::ofstream(tmp) << status.dump(2) << "\n";
    fs::rename(tmp, home_ / "status.json");
  }

 private:
  fs::path home_;
  json endpoints_;
  std::vector<daemon_process> started_;
};

bool any_alive(const json& status) {
  for (const auto& c : status.value("components", json::array()))
    if (alive(c.value("pid", -1), c.value("binary", ""))) return true;
  return false;
}

void remove_state(const fs::path& home, const json& status) {
  for (const auto& c : status.value("components", json::array()))
    fs::remove(home / "run" / (c.value("name", "") + ".pid"));
  fs::remove(home / "status.json");
}

result<std::unique_ptr<broker::connection>> connect_retrying(const std::string& url,
                                                             std::chrono::milliseconds limit) {
  broker::connect_options opts;
  opts.urls = url;
  opts.name = "fnmesh-up";
  opts.reconnect = false;
  opts.timeout = 1000ms;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto conn = broker::connection::connect(opts);
    if (conn || std::chrono::steady_clock::now() > deadline) return conn;
    std::this_thread::sleep_for(100ms);
  }
}

int run_up(const context& ctx, const up_options& o, const CLI::App& cmd) {
  const fs::path home = ctx.home();
  if (auto status = read_status(home)) {
    if (any_alive(*status)) {
      fail("the mesh in " + home.string() +
           " is already up (fnmesh status shows it; fnmesh down stops it)");
      return 3;
    }
    remove_state(home, *status);  // left over from a mesh that died
  }

  int collector_port = o.collector_port, http_port = o.http_port;
  int collector_http_port = o.collector_http_port;
  std::vector<int> nats_ports, route_ports;
  for (unsigned i = 0; i < o.cluster; ++i) {
    nats_ports.push_back(o.nats_port + int(i));
    if (o.cluster > 1) route_ports.push_back(o.nats_route_port + int(i));
  }
  if (o.ports == "auto") {
    auto free = pick_free_ports(3 + nats_ports.size() + route_ports.size());
    if (!free) return fail("cannot pick free ports: " + free.error().message());
    auto next = free->begin();
    if (cmd.count("--collector-port") == 0) collector_port = *next;
    if (cmd.count("--http-port") == 0) http_port = *++next;
    if (cmd.count("--collector-http-port") == 0) collector_http_port = *++next;
    for (auto* ports : {&nats_ports, &route_ports})
      for (size_t i = 0; i < ports->size(); ++i) {
        ++next;
        if (cmd.count(ports == &nats_ports ? "--nats-port" : "--nats-route-port") == 0) (*ports)[i] = *next;
      }
  } else if (!o.ports.empty()) {
    return fail("--ports takes only \"auto\"");
  }

  const auto nats_server = find_nats_server();
  if (!nats_server)
    return fail("nats-server not found on PATH, in /usr/sbin or /usr/bin (tools/setup.sh installs it)");
  const fs::path collector_bin = sibling_binary("fnmesh-collector");
  const fs::path node_bin = sibling_binary("fnmesh-node");
  const fs::path http_bin = sibling_binary("fnmesh-http");
  for (const auto& b : {collector_bin, node_bin})
    if (::access(b.c_str(), X_OK) != 0)
      return fail(b.string() + " not found: build it first (tools/build.sh)");
  const bool with_http = ::access(http_bin.c_str(), X_OK) == 0;

  std::vector<std::pair<int, const char*>> ports = {{collector_port, "--collector-port"},
                                                     {collector_http_port, "--collector-http-port"}};
  if (with_http) ports.emplace_back(http_port, "--http-port");
  for (int port : nats_ports) ports.emplace_back(port, "--nats-port");
  for (int port : route_ports) ports.emplace_back(port, "--nats-route-port");
  for (auto [port, flag] : ports)
    if (!port_free(port))
      return fail("port " + std::to_string(port) + " on 127.0.0.1 is in use: choose another with " +
                  flag + " or use --ports auto");

  std::error_code ec;
  for (const char* sub : {"logs", "run", "nats"}) fs::create_directories(home / sub, ec);
  if (ec) return fail("cannot create " + home.string() + ": " + ec.message());

  std::string nats_url;
  for (int port : nats_ports) nats_url += (nats_url.empty() ? "" : ",") + ("nats://127.0.0.1:" + std::to_string(port));
  const std::string collector_ep = "tcp://127.0.0.1:" + std::to_string(collector_port);
  const std::string collector_http = "http://127.0.0.1:" + std::to_string(collector_http_port);
  const std::string http_url = "http://127.0.0.1:" + std::to_string(http_port);
  const fs::path keys_file = home / "api-keys.yml";
  const fs::path tokens_file = home / "collector-tokens.yml";
  json endpoints = {{"nats", nats_url},
                    {"collector", collector_ep},
                    {"collector_http", collector_http},
                    {"collector_tokens", tokens_file.string()}};
  const auto api_key = ensure_api_keys(keys_file);
  if (!api_key) return fail("cannot write " + keys_file.string() + ": " + api_key.error().message());
  if (auto ok = write_collector_tokens(tokens_file, *api_key); !ok)
    return fail("cannot write " + tokens_file.string() + ": " + ok.error().message());
  if (with_http) {
    endpoints["http"] = http_url;
    endpoints["api_keys"] = keys_file.string();
  }
  mesh_start mesh(home, endpoints);
  const auto wait_limit = std::chrono::seconds(o.wait_s);
  const std::string log_level = "info";

  // 1. nats-server with JetStream, loopback only: one, or a cluster whose streams and KV
  // buckets keep 3 replicas (bootstrap sees 3 servers).
  for (size_t i = 0; i < nats_ports.size(); ++i) {
    const std::string name = nats_ports.size() == 1 ? "nats-server" : "nats-server-" + std::string(1, char('a' + i));
    const fs::path conf = home / (name + ".conf");
    write_nats_config(conf, name, route_ports, i);
    daemon_process nats{name, *nats_server,
                        {"-c", conf.string(), "-js", "-a", "127.0.0.1", "-p", std::to_string(nats_ports[i]),
                         "-sd", (home / "nats" / (nats_ports.size() == 1 ? "" : name)).string()},
                        "nats://127.0.0.1:" + std::to_string(nats_ports[i])};
    if (auto ok = mesh.start(nats); !ok) return mesh.abort(name, "could not start: " + ok.error().message());
  }
  for (size_t i = 0; i < nats_ports.size(); ++i) {
    const auto& nats = mesh.started()[i];
    if (!wait_for([&] { return port_answers(nats_ports[i]); }, [&] { return child_running(nats.pid); }, wait_limit))
      return mesh.abort(nats.name, "did not answer on " + nats.endpoint);
  }
  auto conn = connect_retrying(nats_url, 5s);
  if (!conn) return mesh.abort(mesh.started().front().name, conn.error().message());
  // JetStream may still be recovering its store, or a cluster electing its leaders.
  result<void> boot = broker::bootstrap(**conn);
  const auto boot_deadline = std::chrono::steady_clock::now() + wait_limit;
  while (!boot && std::chrono::steady_clock::now() < boot_deadline) {
    std::this_thread::sleep_for(200ms);
    boot = broker::bootstrap(**conn);
  }
  if (!boot)
    return mesh.abort(mesh.started().front().name, "refused the topology bootstrap: " + boot.error().message());

  // 2. The billing collector.
  daemon_process collector{"fnmesh-collector", collector_bin,
                           {"--listen", collector_ep, "--db", (home / "collector.db").string(),
                            "--http-listen", "127.0.0.1:" + std::to_string(collector_http_port), "--tokens",
                            tokens_file.string(), "--log-level", log_level},
                           collector_ep};
  if (auto ok = mesh.start(collector); !ok) return mesh.abort(collector.name, "could not start: " + ok.error().message());
  const pid_t collector_pid = mesh.last().pid;
  if (!wait_for([&] { return port_answers(collector_port) && port_answers(collector_http_port); },
                [&] { return child_running(collector_pid); }, wait_limit))
    return mesh.abort(collector.name, "did not listen on " + collector_ep + " and " + collector_http);

  // 3. The nodes: each up once its heartbeat is in KV FNMESH_NODES.
  const int64_t node_started_ns = unix_now_ns();
  std::vector<std::pair<std::string, pid_t>> node_ids;
  for (unsigned i = 1; i <= o.nodes; ++i) {
    const std::string id = "node-" + std::to_string(i);
    daemon_process node{o.nodes == 1 ? "fnmesh-node" : "fnmesh-" + id, node_bin,
                        {"--nats", nats_url, "--collector", collector_ep, "--dir",
                         (home / (i == 1 ? "node" : id)).string(), "--node-id", id, "--log-level", log_level},
                        ""};
    if (o.slots > 0) node.args.insert(node.args.end(), {"--slots", std::to_string(o.slots)});
    if (o.no_bpf) node.args.push_back("--no-bpf");
    if (auto ok = mesh.start(node); !ok) return mesh.abort(node.name, "could not start: " + ok.error().message());
    node_ids.emplace_back(id, mesh.last().pid);
  }
  auto nodes = broker::kv_bucket::open(**conn, broker::nodes_bucket);
  if (!nodes) return mesh.abort(mesh.started().front().name, "has no KV " + std::string(broker::nodes_bucket));
  for (size_t i = 0; i < node_ids.size(); ++i) {
    const auto& [id, pid] = node_ids[i];
    // A heartbeat sent since this start (a node killed earlier may have left one in KV).
    auto beating = [&] {
      auto v = (*nodes)->get(id);
      if (!v || !v->has_value()) return false;
      const auto* beat = proto::verified<proto::Heartbeat>(**v);
      return beat && beat->sent_ns() >= node_started_ns;
    };
    const std::string name = mesh.started()[nats_ports.size() + 1 + i].name;
    if (!wait_for(beating, [&] { return child_running(pid); }, wait_limit))
      return mesh.abort(name, child_running(pid) ? "sent no heartbeat" : "exited");
  }

  // 4. The trigger adapters that are built.
  if (with_http) {
    daemon_process http{"fnmesh-http", http_bin,
                        {"--nats", nats_url, "--listen", "127.0.0.1:" + std::to_string(http_port),
                         "--collector", collector_ep, "--api-keys", keys_file.string(),
                         "--log-level", log_level},
                        http_url};
    if (auto ok = mesh.start(http); !ok) return mesh.abort(http.name, "could not start: " + ok.error().message());
    const pid_t pid = mesh.last().pid;
    if (!wait_for([&] { return port_answers(http_port); }, [&] { return child_running(pid); }, wait_limit))
      return mesh.abort(http.name, "did not listen on " + http_url);
  }
  std::vector<std::string> not_built;
  for (const char* name : {"fnmesh-events", "fnmesh-cron", "fnmesh-fswatch"}) {
    const fs::path bin = sibling_binary(name);
    if (::access(bin.c_str(), X_OK) != 0) {
      not_built.push_back(name);
      continue;
    }
    daemon_process adapter{name, bin, {"--nats", nats_url, "--log-level", log_level}, ""};
    if (auto ok = mesh.start(adapter); !ok) return mesh.abort(name, "could not start: " + ok.error().message());
  }
  std::this_thread::sleep_for(300ms);  // an adapter that cannot start exits at once
  for (const auto& d : mesh.started())
    if (!child_running(d.pid)) return mesh.abort(d.name, "exited");

  mesh.write(true);
  std::printf("mesh is up (state in %s)\n", home.c_str());
  std::printf("  nats       %s\n  collector  %s  (billing API %s; tokens in %s)\n", nats_url.c_str(),
              collector_ep.c_str(), collector_http.c_str(), tokens_file.c_str());
  if (with_http)
    std::printf("  http       %s  (Authorization: Bearer %s; keys in %s)\n", http_url.c_str(),
                api_key->c_str(), keys_file.c_str());
  std::string ids;
  for (const auto& [id, _] : node_ids) ids += (ids.empty() ? "" : ", ") + id;
  std::printf("  %-10s %s\n", node_ids.size() == 1 ? "node" : "nodes", ids.c_str());
  for (const auto& name : not_built) std::printf("  (%s not built: its triggers do not fire)\n", name.c_str());
  return 0;
}

int run_down(const context& ctx, int grace_s) {
  const fs::path home = ctx.home();
  auto status = read_status(home);
  if (!status) {
    std::printf("no mesh is running in %s\n", home.c_str());
    return 0;
  }
  auto components = status->value("components", json::array());
  for (auto it = components.rbegin(); it != components.rend(); ++it) {
    const std::string name = it->value("name", "");
    const pid_t pid = it->value("pid", -1);
    const fs::path binary = it->value("binary", "");
    if (!alive(pid, binary)) {
      std::printf("%-17s already stopped\n", name.c_str());
    } else {
      const bool killed = stop(pid, binary, std::chrono::seconds(grace_s));
      std::printf("%-17s stopped (pid %d%s)\n", name.c_str(), int(pid),
                  killed ? ", killed after the grace period" : "");
    }
    fs::remove(home / "run" / (name + ".pid"));
  }
  fs::remove(home / "status.json");
  return 0;
}

int run_status(const context& ctx, bool as_json) {
  const fs::path home = ctx.home();
  auto status = read_status(home);
  if (!status) {
    if (as_json)
      std::printf("%s\n", json{{"home", home.string()}, {"running", false}, {"components", json::array()}}
                              .dump(2)
                              .c_str());
    else
      std::printf("no mesh is running in %s (start one with: fnmesh up)\n", home.c_str());
    return 1;
  }
  bool all = true;
  json out = *status;
  table t({"COMPONENT", "PID", "ALIVE", "ENDPOINT", "LOG"});
  for (auto& c : out["components"]) {
    const bool up = alive(c.value("pid", -1), c.value("binary", ""));
    all = all && up;
    c["alive"] = up;
    t.add({c.value("name", ""), std::to_string(c.value("pid", -1)), up ? "yes" : "NO",
           c.value("endpoint", "") , c.value("log", "")});
  }
  all = all && out.value("ready", false);
  out["running"] = all;
  if (as_json) {
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    t.print();
    if (!out.value("ready", false)) std::printf("(the mesh did not finish starting)\n");
  }
  return all ? 0 : 1;
}

}  // namespace

void add_mesh_commands(CLI::App& app, context& ctx, command_list& out) {
  auto o = std::make_shared<up_options>();
  auto* up = app.add_subcommand("up", "start a local mesh: nats-server(s), collector, node(s), the adapters");
  up->add_option("--ports", o->ports, "\"auto\": pick free ports (explicit --*-port flags still win)")
      ->check(CLI::IsMember({"auto"}));
  up->add_option("--cluster", o->cluster, "nats-servers: 1, or 3 for a JetStream cluster (streams and KV keep 3 replicas)")
      ->check(CLI::IsMember({1u, 3u}))
      ->capture_default_str();
  up->add_option("--nodes", o->nodes, "fnmesh-node processes (node-1 ... node-N)")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  up->add_option("--nats-port", o->nats_port, "NATS client port (a cluster's servers use it and the next ones)")
      ->capture_default_str();
  up->add_option("--nats-route-port", o->nats_route_port, "a cluster's first route port (and the next ones)")
      ->capture_default_str();
  up->add_option("--collector-port", o->collector_port, "collector ZeroMQ port")->capture_default_str();
  up->add_option("--collector-http-port", o->collector_http_port, "collector HTTP API port (billing queries)")
      ->capture_default_str();
  up->add_option("--http-port", o->http_port, "HTTP adapter port")->capture_default_str();
  up->add_option("--slots", o->slots, "the node's slots (default: the node's own)");
  up->add_flag("--no-bpf", o->no_bpf, "the node counts CPU with cgroups, not the BPF meter (no kernel CPU budgets)");
  up->add_option("--wait", o->wait_s, "seconds to wait for each component")->capture_default_str();
  up->footer("Exit status 3: a mesh is already up in $FNMESH_HOME.");
  out.push_back({up, [&ctx, o, up] { return run_up(ctx, *o, *up); }});

  auto grace = std::make_shared<int>(20);
  auto* down = app.add_subcommand("down", "stop the local mesh (SIGTERM in reverse order, SIGKILL after --grace)");
  down->add_option("--grace", *grace, "seconds each component may take to stop")->capture_default_str();
  out.push_back({down, [&ctx, grace] { return run_down(ctx, *grace); }});

  auto as_json = std::make_shared<bool>(false);
  auto* status = app.add_subcommand("status", "each component of the local mesh: pid, alive, endpoint");
  status->add_flag("--json", *as_json, "print JSON");
  status->footer("Exit status 0 when every component runs.");
  out.push_back({status, [&ctx, as_json] { return run_status(ctx, *as_json); }});
}

}  // namespace fnmesh::cli
