#include "tests/support/mesh.h"

#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "broker/client/collector_client.h"
#include "broker/client/topology.h"
#include "tests/support/http_exchange.h"

namespace fnmesh::test {

namespace fs = std::filesystem;
namespace p = proto;
using namespace std::chrono_literals;

void mesh::TearDown() {
  for (auto& [name, node] : nodes_)
    if (node.running()) node.stop(std::chrono::seconds(15));
}

void mesh::SetUp() {
  if (cluster_mode_)
    cluster_.emplace();
  else
    nats_.emplace();
  collector_endpoint_ = "tcp://127.0.0.1:" + std::to_string(free_loopback_port());
  collector_http_port_ = free_loopback_port();
  std::ofstream(dir_ / "collector-tokens.yml") << "admin: [" << admin_token << "]\n";
  auto conn = broker::connection::connect({.urls = nats_urls(), .name = "mesh-test"});
  ASSERT_TRUE(conn) << conn.error().message();
  conn_ = std::move(*conn);
  ASSERT_TRUE(broker::bootstrap(*conn_));
  start_collector();
  if (HasFatalFailure()) return;
  auto router = broker::reply_router::bind(zmq_);
  ASSERT_TRUE(router);
  router_ = std::move(*router);
  invoker_ = std::make_unique<broker::invoker>(*conn_, nullptr);
}

void mesh::start_collector() {
  collector_.emplace(child_process::spawn(
      {.program = bin("fnmesh-collector"),
       .args = {"--listen", collector_endpoint_, "--db", (dir_ / "collector.db").string(),
                "--http-listen", "127.0.0.1:" + std::to_string(collector_http_port_), "--tokens",
                (dir_ / "collector-tokens.yml").string()},
       .log = dir_ / "collector.log"}));
  broker::collector_client probe(zmq_, collector_endpoint_);
  for (int i = 0; i < 100; ++i)
    if (probe.query_activation("0", 100ms)) return;
  FAIL() << "collector did not answer:\n" << collector_->log_text();
}

void mesh::kill_collector() {
  if (collector_ && collector_->running()) {
    collector_->signal(SIGKILL);
    collector_->wait(10s);
  }
}

std::string mesh::nats_urls() const { return cluster_ ? cluster_->urls() : nats_->url(); }

child_process& mesh::start_node(const std::string& name, std::vector<std::string> extra) {
  node_args_[name] = std::move(extra);
  node_starts_[name] = 0;
  return restart_node(name);
}

child_process& mesh::restart_node(const std::string& name) {
  std::vector<std::string> args = {"--nats", nats_urls(), "--collector", collector_endpoint_,
                                   "--dir", (dir_ / name).string(), "--node-id", name};
  const auto& extra = node_args_.at(name);
  args.insert(args.end(), extra.begin(), extra.end());
  const int start = ++node_starts_[name];
  const auto log = dir_ / (start == 1 ? name + ".log" : name + "." + std::to_string(start) + ".log");
  if (auto old = nodes_.find(name); old != nodes_.end() && old->second.running()) old->second.stop(15s);
  auto& node = nodes_.insert_or_assign(name, child_process::spawn({.program = bin("fnmesh-node"),
                                                                   .args = args,
                                                                   .log = log}))
                   .first->second;
  EXPECT_TRUE(node.wait_for_log("ready", 20s)) << node.log_text();
  return node;
}

void mesh::kill_node(const std::string& name) {
  auto& node = nodes_.at(name);
  if (!node.running()) return;
  node.signal(SIGKILL);
  node.wait(10s);
}

std::string mesh::command(const std::vector<std::string>& args) {
  return command_line(bin("fnmesh"), args) + " --nats " + quote(nats_urls()) +
         " --collector-http http://127.0.0.1:" + std::to_string(collector_http_port_) +
         " --token " + admin_token + " --home " + quote((dir_ / "home").string());
}

child_process mesh::start_cli(const std::vector<std::string>& args, int run) {
  const auto base = dir_ / ("cli-" + std::to_string(run));
  return child_process::spawn(
      {.program = "/bin/sh",
       .args = {"-c", "exec " + command(args) + " 2>" + quote(base.string() + ".err") + " </dev/null"},
       .log = base.string() + ".out"});
}

cli_run mesh::finish(child_process& proc, int run) {
  const auto base = dir_ / ("cli-" + std::to_string(run));
  const auto code = proc.wait(60s);
  return {code.value_or(-1), slurp(base.string() + ".out"), slurp(base.string() + ".err")};
}

cli_run mesh::cli(const std::vector<std::string>& args) {
  const int run = ++cli_runs_;
  auto proc = start_cli(args, run);
  return finish(proc, run);
}

void mesh::deploy(const fs::path& folder) {
  auto r = cli({"deploy", folder.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
}

fs::path mesh::write_function(const std::string& name, const std::string& manifest_extra,
                              const std::string& body) {
  const auto folder = dir_ / ("fn-" + name);
  fs::create_directories(folder);
  std::ofstream(folder / "fnmesh.yml") << "functions:\n  " << name
                                       << ":\n    runtime: python3\n    handler: handler.handle\n"
                                       << manifest_extra;
  std::ofstream(folder / "handler.py") << body;
  return folder;
}

result<broker::published> mesh::invoke(const std::string& fn, const std::string& payload, bool sync) {
  broker::invocation_request req;
  req.function = fn;
  req.payload = std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  if (sync) {
    req.reply_endpoint = router_->endpoint();
    req.correlation = ++correlation_;
  }
  return invoker_->invoke(req);
}

result<broker::published> mesh::invoke_until_stored(const std::string& fn, const std::string& payload,
                                                    const std::string& invocation_id, bool sync,
                                                    std::chrono::milliseconds patience) {
  broker::invocation_request req;
  req.invocation_id = invocation_id;
  req.function = fn;
  req.payload = std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  if (sync) {
    req.reply_endpoint = router_->endpoint();
    req.correlation = ++correlation_;
  }
  const auto give_up = std::chrono::steady_clock::now() + patience;
  for (;;) {
    auto sent = invoker_->invoke(req);
    if (sent || std::chrono::steady_clock::now() >= give_up) return sent;
    ++refused_publishes_;
    std::this_thread::sleep_for(200ms);
  }
}

broker::result_message mesh::receive(const std::string& invocation_id, std::chrono::milliseconds timeout) {
  auto got = router_->receive(timeout);
  EXPECT_TRUE(got) << "no result for " << invocation_id;
  if (!got) return broker::result_message({});
  EXPECT_EQ(p::view(got->get().invocation_id()), invocation_id);
  return std::move(*got);
}

broker::result_message mesh::call(const std::string& fn, const std::string& payload,
                                  std::chrono::milliseconds timeout) {
  auto published = invoke(fn, payload);
  EXPECT_TRUE(published) << published.error().message();
  if (!published) return broker::result_message({});
  return receive(published->invocation_id, timeout);
}

namespace {

// nullopt when the collector did not answer.
std::optional<attempt_list> query_attempts(broker::collector_client& client, const std::string& invocation_id) {
  auto reply = client.query_activation(invocation_id, 2s);
  if (!reply) return std::nullopt;
  attempt_list out;
  const auto* report = reply->get().body_as_ActivationReport();
  if (!report || !report->attempts()) return out;
  for (const auto* c : *report->attempts()) out.emplace_back(c->result()->attempt(), c->result()->status());
  return out;
}

}  // namespace

attempt_list mesh::attempts(const std::string& invocation_id) {
  broker::collector_client client(zmq_, collector_endpoint_);
  return query_attempts(client, invocation_id).value_or(attempt_list{});
}

std::map<std::string, attempt_list> mesh::wait_settled(const std::vector<std::string>& ids,
                                                       const std::function<bool(const attempt_list&)>& settled,
                                                       std::chrono::milliseconds timeout) {
  std::map<std::string, attempt_list> seen;
  std::vector<std::string> open = ids;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    broker::collector_client client(zmq_, collector_endpoint_);
    std::vector<std::string> still;
    bool answering = true;
    for (const auto& id : open) {
      // A collector that does not answer ends this sweep; the next one asks again.
      auto got = answering ? query_attempts(client, id) : std::nullopt;
      answering = got.has_value();
      if (got) seen[id] = std::move(*got);
      if (!got || !settled(seen[id])) still.push_back(id);
    }
    open = std::move(still);
    if (open.empty() || std::chrono::steady_clock::now() >= deadline) return seen;
    std::this_thread::sleep_for(500ms);
  }
}

std::vector<dead_letter> mesh::dead_letters(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"dlq", "ls", "--json", "--limit", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = cli(args);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  std::vector<dead_letter> out;
  auto rows = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_TRUE(rows.is_array()) << describe(r);
  if (r.exit_code != 0 || !rows.is_array()) return out;
  for (const auto& row : rows)
    out.push_back({.seq = row.value("seq", uint64_t(0)),
                   .id = row.value("id", ""),
                   .tenant = row.value("tenant", ""),
                   .function = row.value("function", ""),
                   .status = row.value("status", ""),
                   .node = row.value("node", ""),
                   .error = row.value("error", ""),
                   .attempts = row.value("attempts", uint32_t(0))});
  return out;
}

std::map<std::string, uint64_t> mesh::billed(const std::string& group_by) {
  auto reply = http_call(collector_http_port_, "GET", "/v1/usage?by=" + group_by, {}, true,
                         std::string("Authorization: Bearer ") + admin_token + "\r\n");
  std::map<std::string, uint64_t> out;
  auto body = nlohmann::json::parse(reply.body, nullptr, false);
  if (reply.status != 200 || !body.contains("rows")) return out;
  for (const auto& row : body["rows"]) out[row["key"]] = row["invocations"];
  return out;
}

}  // namespace fnmesh::test
