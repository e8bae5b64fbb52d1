// fnmesh invoke: one invocation through the mesh; sync callers wait on their own ROUTER.
#include <unistd.h>

#include <iostream>
#include <iterator>

#include "broker/client/invoker.h"
#include "broker/client/reply_router.h"
#include "broker/client/subjects.h"
#include "common/errc.h"
#include "tools/cli.h"

namespace fnmesh::cli {
namespace {

using namespace std::chrono_literals;

struct invoke_options {
  std::string function;
  std::string data;
  std::string file;
  bool async = false;
  double timeout_s = 0;  // 0: the function's timeout + a margin
  std::string tenant = std::string(broker::default_tenant);
  std::string content_type = "application/json";
};

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MiB", double(bytes) / double(1u << 20));
  return buf;
}

int run_invoke(const context& ctx, const invoke_options& o) {
  std::string payload = o.data;
  if (!o.file.empty()) {
    if (o.file == "-") {
      payload.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else {
      auto text = read_file(o.file);
      if (!text) return fail("cannot read " + o.file + ": " + std::error_code(errno, std::system_category()).message());
      payload = std::move(*text);
    }
  }
  const broker::limits lim;
  const size_t limit = o.async ? lim.async_payload : lim.sync_payload;
  if (payload.size() > limit)
    return fail("payload too large: " + std::to_string(payload.size()) + " bytes, the " +
                (o.async ? "async" : "sync") + " limit is " + std::to_string(limit) + " bytes (" +
                mib(limit) + ")");
  if (!broker::valid_name(o.function) || !broker::valid_name(o.tenant))
    return fail("no_such_function: " + o.function + " (names are [a-z0-9][a-z0-9-]{0,62})");

  auto conn = ctx.connect();
  if (!conn) return 1;
  auto functions = ctx.open_bucket(*conn, broker::functions_bucket);
  if (!functions) return 1;
  auto value = functions->get(broker::function_key(o.tenant, o.function));
  if (!value) return fail("cannot read the spec of " + o.function + ": " + value.error().message());
  const proto::FunctionSpec* spec = value->has_value() ? proto::verified<proto::FunctionSpec>(**value) : nullptr;
  if (!spec) return fail("no_such_function: " + o.function);

  broker::invoker inv(*conn, nullptr, lim);
  broker::invocation_request req;
  req.tenant = o.tenant;
  req.function = o.function;
  req.payload = {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()};
  req.content_type = o.content_type;
  req.trigger = proto::Trigger::cli;
  req.source = "fnmesh-cli";

  if (o.async) {
    auto sent = inv.invoke(req);
    if (!sent) {
      if (sent.error() == errc::not_found) return fail("no_such_function: " + o.function);
      return fail("cannot invoke " + o.function + ": " + sent.error().message());
    }
    std::printf("%s\n", sent->invocation_id.c_str());
    return 0;
  }

  zmq::context_t zctx(1);
  auto router = broker::reply_router::bind(zctx);
  if (!router) return fail("cannot bind a reply socket: " + router.error().message());
  req.reply_endpoint = (*router)->endpoint();
  req.correlation = 1;
  auto sent = inv.invoke(req);
  if (!sent) {
    if (sent.error() == errc::not_found) return fail("no_such_function: " + o.function);
    if (sent.error() == errc::too_large)
      return fail("payload too large: the sync limit is " + std::to_string(lim.sync_payload) + " bytes");
    return fail("cannot invoke " + o.function + ": " + sent.error().message());
  }

  // The function's own timeout, plus room for a cold start and the queue.
  const auto wait = o.timeout_s > 0 ? std::chrono::milliseconds(int64_t(o.timeout_s * 1000))
                                    : std::chrono::milliseconds(spec->timeout_s() * 1000) + 10s;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) break;
    auto got = (*router)->receive(left);
    if (!got) {
      if (got.error() == errc::timeout) break;
      return fail("waiting for the result: " + got.error().message());
    }
    const proto::Result& r = got->get();
    if (proto::view(r.invocation_id()) != sent->invocation_id) continue;
    const auto out = proto::bytes(r.output());
    if (r.status() == proto::Status::ok) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      if (!out.empty() && out.back() != '\n') std::fputc('\n', stdout);
      return 0;
    }
    if (!out.empty()) std::fwrite(out.data(), 1, out.size(), stdout);
    std::fprintf(stderr, "error: %s: %s\n", proto::status_name(r.status()),
                 std::string(proto::view(r.error())).c_str());
    return 1;
  }
  std::fprintf(stderr,
               "error: timeout: no result within %.1f s (invocation %s; `fnmesh result %s` shows it "
               "once it finishes)\n",
               double(wait.count()) / 1000, sent->invocation_id.c_str(), sent->invocation_id.c_str());
  return 1;
}

}  // namespace

void add_invoke_command(CLI::App& app, context& ctx, command_list& out) {
  auto o = std::make_shared<invoke_options>();
  auto* cmd = app.add_subcommand("invoke", "invoke a function and print its output (or, --async, its invocation id)");
  cmd->add_option("function", o->function, "function name")->required();
  auto* data = cmd->add_option("--data,-d", o->data, "payload text");
  cmd->add_option("--file,-f", o->file, "payload from a file (- for stdin)")->excludes(data);
  cmd->add_flag("--async", o->async, "do not wait: print the invocation id (see `fnmesh result`)");
  cmd->add_option("--timeout", o->timeout_s, "seconds to wait (default: the function's timeout + 10 s)");
  cmd->add_option("--tenant", o->tenant, "tenant")->capture_default_str();
  cmd->add_option("--content-type", o->content_type, "payload content type")->capture_default_str();
  cmd->footer("Exit status 1 when the function fails: `error: <status>: <text>` on stderr.");
  out.push_back({cmd, [&ctx, o] { return run_invoke(ctx, *o); }});
}

}  // namespace fnmesh::cli
