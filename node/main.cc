// fnmesh-node: pulls invocations from NATS JetStream and runs them (node/README.md).
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "common/log.h"
#include "node/check.h"
#include "node/node.h"

int main(int argc, char** argv) {
  fnmesh::node::node_options opts;
  auto& sandboxes = opts.runtime.sandboxes;
  sandboxes.zygote = FNMESH_DEFAULT_ZYGOTE;
  sandboxes.python_zygote = FNMESH_DEFAULT_PYTHON_ZYGOTE;
  sandboxes.python_shim_dir = FNMESH_DEFAULT_PYTHON_SHIM_DIR;
  sandboxes.python_proto_dir = FNMESH_DEFAULT_PYTHON_PROTO;
  sandboxes.nodejs_shim = FNMESH_DEFAULT_NODEJS_SHIM;
  std::string log_level = "info";
  uint32_t memory_mb = 0, keep_warm_s = 300, drain_s = 10;
  std::vector<std::string> labels;

  CLI::App app{"fnmesh-node: pulls invocations from NATS JetStream and runs them"};
  app.set_config("--config", "", "read options from an INI/TOML file");
  app.add_option("--nats", opts.nats_urls, "NATS server URL(s), comma-separated")
      ->envname("FNMESH_NATS")->capture_default_str();
  app.add_option("--collector", opts.collector, "billing collector ZeroMQ endpoint")
      ->capture_default_str();
  app.add_option("--dir", opts.dir, "state folder: completion spool, code cache, sandbox staging")
      ->capture_default_str();
  app.add_option("--node-id", opts.node_id, "this node's id (default: hostname-<random>)");
  app.add_option("--label", labels,
                 "KEY=VALUE placement label, repeatable: a function with labels runs only on nodes with all of them");
  app.add_option("--slots", opts.slots, "invocations run at once")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--memory-mb", memory_mb, "memory budget (default: 80% of the machine)");
  app.add_option("--keep-warm", keep_warm_s, "seconds an idle sandbox is kept (scale to zero after)")
      ->capture_default_str();
  app.add_option("--drain-timeout", drain_s, "seconds SIGTERM waits for the spool to flush")
      ->capture_default_str();
  app.add_option("--zygote", sandboxes.zygote, "fnmesh-zygote binary")->capture_default_str();
  app.add_option("--python-zygote", sandboxes.python_zygote, "fnmesh-python-zygote binary")
      ->capture_default_str();
  app.add_option("--python-shim-dir", sandboxes.python_shim_dir, "folder of the python3 runtime's shim.py")
      ->capture_default_str();
  app.add_option("--python-proto-dir", sandboxes.python_proto_dir,
                 "generated fnmesh.proto Python package")->capture_default_str();
  app.add_option("--nodejs-shim", sandboxes.nodejs_shim, "the nodejs runtime's shim.js")
      ->capture_default_str();
  app.add_option("--metrics-listen", opts.metrics_listen,
                 "HOST:PORT of the Prometheus /metrics endpoint (port 0: a free one, logged at start)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  bool no_bpf = false;
  app.add_flag("--no-bpf", no_bpf, "count CPU with cgroups, not the BPF meter (no kernel-enforced CPU budgets)");
  bool check = false;
  app.add_flag("--check", check, "print what this machine supports (BTF, BPF, cgroups, seccomp, user namespaces) and exit");
  CLI11_PARSE(app, argc, argv);
  if (check) {
    const auto c = fnmesh::node::check_machine();
    std::fputs(c.text.c_str(), stdout);
    return c.can_run ? 0 : 1;
  }

  if (!fnmesh::set_log_level(log_level)) {
    std::fprintf(stderr, "fnmesh-node: unknown log level '%s'\n", log_level.c_str());
    return 2;
  }
  for (const auto& label : labels) {
    const auto eq = label.find('=');
    if (eq == 0 || eq == std::string::npos) {
      std::fprintf(stderr, "fnmesh-node: --label %s: expected KEY=VALUE\n", label.c_str());
      return 2;
    }
    opts.labels[label.substr(0, eq)] = label.substr(eq + 1);
  }
  opts.memory_bytes = int64_t(memory_mb) << 20;
  opts.keep_warm = std::chrono::seconds(keep_warm_s);
  opts.runtime.bpf = !no_bpf;

  // Every thread inherits this mask, so SIGTERM/SIGINT reach only sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  try {
    fnmesh::node::node n(opts);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    fnmesh::logger("node")->info("{}: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    n.drain(std::chrono::seconds(drain_s));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fnmesh-node: %s\n", e.what());
    return 1;
  }
  return 0;
}
