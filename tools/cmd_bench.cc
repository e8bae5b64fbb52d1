// fnmesh bench: N sync invocations through the whole mesh at concurrency C, from one
// thread: async publishes, every Result on one ROUTER, correlated by sequence number.
#include <algorithm>
#include <cmath>

#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "broker/client/reply_router.h"
#include "broker/client/subjects.h"
#include "common/clock.h"
#include "common/errc.h"
#include "tools/cli.h"

namespace fnmesh::cli {
namespace {

using namespace std::chrono_literals;

struct bench_options {
  uint64_t n = 10000;
  unsigned c = 16;
  std::string function = "echo";
  std::string tenant = std::string(broker::default_tenant);
  size_t payload_bytes = 16;
  uint64_t warmup = 200;
  double stall_s = 15;
};

struct phase_outcome {
  std::vector<int64_t> latencies_ns;  // successful invocations only
  uint64_t errors = 0;
  uint64_t lost = 0;
  int64_t elapsed_ns = 0;
  std::string first_error;
};

// One benchmark: publishes through the invoker and receives on the router (both borrowed),
// from one thread; correlation ids count up across phases so a late result is never
// taken for another phase's.
class bench_run {
 public:
  bench_run(broker::invoker& inv, broker::reply_router& router, broker::invocation_request req,
            std::chrono::milliseconds stall)
      : inv_(inv), router_(router), req_(std::move(req)), stall_(stall) {}

  phase_outcome run(uint64_t count, unsigned concurrency) {
    phase_outcome out;
    out.latencies_ns.reserve(count);
    const uint64_t base = next_correlation_;
    next_correlation_ += count;
    std::vector<int64_t> started(count, 0);  // 0: not in flight
    uint64_t sent = 0, finished = 0, in_flight = 0;
    const int64_t t0 = mono_now_ns();
    int64_t last_progress = t0;
    while (finished < count) {
      while (in_flight < concurrency && sent < count) {
        req_.correlation = base + sent;
        req_.invocation_id.clear();
        started[sent] = mono_now_ns();
        auto ok = inv_.invoke(req_, /*async_publish=*/true);
        ++sent;
        if (!ok) {
          started[sent - 1] = 0;
          ++out.errors;
          ++finished;
          if (out.first_error.empty()) out.first_error = "publish: " + ok.error().message();
          continue;
        }
        ++in_flight;
      }
      auto got = router_.receive(100ms);
      const int64_t now = mono_now_ns();
      if (!got) {
        if (now - last_progress > std::chrono::nanoseconds(stall_).count()) {
          out.lost = in_flight;
          break;
        }
        continue;
      }
      const proto::Result& r = got->get();
      if (r.correlation() < base || r.correlation() >= base + count) continue;
      int64_t& start = started[r.correlation() - base];
      if (start == 0) continue;  // a duplicate
      if (r.status() == proto::Status::ok) {
        out.latencies_ns.push_back(now - start);
      } else {
        ++out.errors;
        if (out.first_error.empty())
          out.first_error = std::string(proto::status_name(r.status())) + ": " + std::string(proto::view(r.error()));
      }
      start = 0;
      --in_flight;
      ++finished;
      last_progress = now;
    }
    out.elapsed_ns = mono_now_ns() - t0;
    return out;
  }

 private:
  broker::invoker& inv_;
  broker::reply_router& router_;
  broker::invocation_request req_;
  std::chrono::milliseconds stall_;
  uint64_t next_correlation_ = 1;
};

int64_t percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i = size_t(std::ceil(p / 100.0 * double(sorted.size()))) ;
  return sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)];
}

int run_bench(const context& ctx, const bench_options& o) {
  if (o.c == 0 || o.n == 0) return fail("-n and -c must be at least 1");
  auto conn = ctx.connect();
  if (!conn) return 1;
  auto registry = broker::function_registry::open(*conn);
  if (!registry) return fail("cannot read the deployed functions: " + registry.error().message());
  if (!(*registry)->find(o.tenant, o.function))
    return fail("no_such_function: " + o.function + " (deploy it first, e.g. fnmesh deploy build/examples/echo)");

  zmq::context_t zctx(1);
  auto router = broker::reply_router::bind(zctx);
  if (!router) return fail("cannot bind a reply socket: " + router.error().message());
  broker::invoker inv(*conn, registry->get());
  const std::string payload(o.payload_bytes, 'x');
  broker::invocation_request req;
  req.tenant = o.tenant;
  req.function = o.function;
  req.payload = {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()};
  req.content_type = "application/octet-stream";
  req.trigger = proto::Trigger::cli;
  req.source = "fnmesh-bench";
  req.reply_endpoint = (*router)->endpoint();
  bench_run bench(inv, **router, req, std::chrono::milliseconds(int64_t(o.stall_s * 1000)));

  std::printf("bench: %s, %llu invocations at concurrency %u, payload %zu B (warm-up %llu)\n", o.function.c_str(),
              (unsigned long long)o.n, o.c, o.payload_bytes, (unsigned long long)o.warmup);
  std::fflush(stdout);
  if (o.warmup > 0) {
    auto warm = bench.run(o.warmup, o.c);
    if (warm.lost > 0 || warm.latencies_ns.empty())
      return fail("warm-up failed: " + std::to_string(warm.lost) + " lost, " + std::to_string(warm.errors) +
                  " errors" + (warm.first_error.empty() ? "" : " (" + warm.first_error + ")"));
  }
  auto m = bench.run(o.n, o.c);
  (void)conn->js_publish_async_complete(5s);
  std::sort(m.latencies_ns.begin(), m.latencies_ns.end());
  auto us = [](int64_t ns) { return (unsigned long long)(ns / 1000); };
  std::printf("  ok %zu  errors %llu  lost %llu\n", m.latencies_ns.size(), (unsigned long long)m.errors,
              (unsigned long long)m.lost);
  if (!m.first_error.empty()) std::printf("  first error: %s\n", m.first_error.c_str());
  std::printf("  latency µs: p50 %llu  p90 %llu  p99 %llu  max %llu\n", us(percentile(m.latencies_ns, 50)),
              us(percentile(m.latencies_ns, 90)), us(percentile(m.latencies_ns, 99)),
              us(m.latencies_ns.empty() ? 0 : m.latencies_ns.back()));
  const double seconds = double(m.elapsed_ns) / 1e9;
  std::printf("  throughput: %.0f invocations/s (%.2f s)\n", seconds > 0 ? double(m.latencies_ns.size()) / seconds : 0.0,
              seconds);
  return m.lost > 0 || m.errors > 0 ? 1 : 0;
}

}  // namespace

void add_bench_command(CLI::App& app, context& ctx, command_list& out) {
  auto o = std::make_shared<bench_options>();
  auto* cmd = app.add_subcommand("bench", "sync invocations through the whole mesh: latency percentiles and rate");
  cmd->add_option("-n", o->n, "invocations measured")->capture_default_str();
  cmd->add_option("-c", o->c, "invocations in flight")->capture_default_str();
  cmd->add_option("--function", o->function, "function to call (a no-op is best)")->capture_default_str();
  cmd->add_option("--tenant", o->tenant, "tenant")->capture_default_str();
  cmd->add_option("--payload-bytes", o->payload_bytes, "payload size")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "invocations before measuring (not counted)")->capture_default_str();
  cmd->add_option("--stall", o->stall_s, "seconds without any result before giving up")->capture_default_str();
  out.push_back({cmd, [&ctx, o] { return run_bench(ctx, *o); }});
}

}  // namespace fnmesh::cli
