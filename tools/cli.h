#pragma once
// What every fnmesh subcommand shares: the global options, where the local mesh keeps
// its state ($FNMESH_HOME), how NATS and the collector are found, and output helpers.
// One context per process, used from the main thread only.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/client/connection.h"
#include "broker/client/kv.h"

namespace fnmesh::cli {

inline constexpr std::string_view default_nats = "nats://127.0.0.1:4222";
inline constexpr std::string_view default_collector_http = "http://127.0.0.1:7701";

// The global options and how they resolve (flag, env, status.json, default).
// Owns only option strings; one per process, read from the main thread.
class context {
 public:
  void add_global_options(CLI::App& app);

  // $FNMESH_HOME (or --home), default ./.fnmesh, absolute.
  std::filesystem::path home() const;
  // --nats, else $FNMESH_NATS, else the URL `fnmesh up` wrote to status.json, else default.
  std::string nats_url() const;
  // The collector's HTTP API: --collector-http, else $FNMESH_COLLECTOR_HTTP, else
  // status.json's collector_http, else default_collector_http.
  std::string collector_http() const;
  // The bearer token for it: --token, else $FNMESH_TOKEN, else the first `admin` token of
  // the tokens file status.json names (collector_tokens), else "" (the collector says 401).
  std::string collector_token() const;
  const std::string& log_level() const { return log_level_; }

  // Connects to NATS, or prints one line naming the URL and returns nullptr.
  std::unique_ptr<broker::connection> connect() const;
  // Opens a KV bucket, or prints why not and returns nullptr.
  std::unique_ptr<broker::kv_bucket> open_bucket(broker::connection& conn,
                                                 std::string_view bucket) const;

 private:
  std::string home_;
  std::string nats_;
  std::string collector_http_;
  std::string token_;
  std::string log_level_ = "warn";
};

// A subcommand and what it does once parsed (returns the exit code).
struct command {
  CLI::App* app;
  std::function<int()> run;
};
using command_list = std::vector<command>;

void add_mesh_commands(CLI::App& app, context& ctx, command_list& out);      // up, down, status
void add_deploy_commands(CLI::App& app, context& ctx, command_list& out);    // deploy, ls, rm
void add_invoke_command(CLI::App& app, context& ctx, command_list& out);     // invoke
void add_publish_command(CLI::App& app, context& ctx, command_list& out);    // publish
void add_collector_commands(CLI::App& app, context& ctx, command_list& out); // billing, activations, result
void add_nodes_command(CLI::App& app, context& ctx, command_list& out);      // nodes
void add_bench_command(CLI::App& app, context& ctx, command_list& out);      // bench
void add_logs_command(CLI::App& app, context& ctx, command_list& out);       // logs
void add_dlq_commands(CLI::App& app, context& ctx, command_list& out);       // dlq ls, show, redrive, purge

// $FNMESH_HOME/status.json as `fnmesh up` wrote it, if the mesh was started.
std::optional<nlohmann::json> read_status(const std::filesystem::path& home);

// Prints "fnmesh: <message>" to stderr and returns 1 (the usual failing exit code).
int fail(std::string_view message);

// Reads a whole file, or nullopt with errno set.
std::optional<std::string> read_file(const std::filesystem::path& path);

// A text table: columns padded to their widest cell, two spaces apart.
// Owns its rows; filled and printed by one thread.
class table {
 public:
  explicit table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::FILE* out = stdout) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "1h", "30m", "45s", "2d", "500ms" -> nanoseconds; nullopt when malformed.
std::optional<int64_t> parse_duration_ns(std::string_view text);
// A duration for people: "850 µs", "12.3 ms", "4.1 s", "3 min".
std::string human_duration_ns(int64_t ns);
// UTC with milliseconds: "2024-05-01T12:34:56.789Z".
std::string rfc3339_ms(int64_t unix_ns);

// nats.c's last error text for `s`, else the status's own.
std::string why(natsStatus s);
// A JetStream subscription; destroying it unsubscribes, which deletes its ephemeral consumer.
struct subscription_deleter {
  void operator()(natsSubscription* s) const noexcept {
    natsSubscription_Unsubscribe(s);
    natsSubscription_Destroy(s);
  }
};
using subscription = std::unique_ptr<natsSubscription, subscription_deleter>;

}  // namespace fnmesh::cli
