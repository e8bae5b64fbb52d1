#include "node/node.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <stdexcept>

#include "broker/client/invocation_copy.h"
#include "broker/client/topology.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/ulid.h"

namespace fnmesh::node {

namespace p = fnmesh::proto;
using namespace std::chrono_literals;

namespace {

constexpr auto warm_request_expiry = 20s;  // an idle sandbox's waiting pull request, renewed
// A fresh or just-restarted cluster answers JetStream calls once it has elected leaders.
constexpr auto startup_patience = 30s;
// After a retry or dead letter could not be published: NATS is likely electing a leader.
constexpr auto republish_delay = 2s;
constexpr const char* not_before_header = "Fnmesh-Not-Before";  // a retry's earliest start, unix ns
constexpr size_t max_dead_letter_error = 1024;

std::string default_node_id() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return std::string(host) + "-" + new_ulid().substr(20);
}

// The node's cgroup directories are named by its id and state folder: a restart finds
// (and cleans) what a crashed run left, and two nodes with one id never share them.
std::string cgroup_name(const std::string& node_id, const std::filesystem::path& dir) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (char c : std::filesystem::absolute(dir).lexically_normal().string()) h = (h ^ uint8_t(c)) * 16777619u;
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", h);
  return node_id + "-" + hex;
}

int64_t default_memory_budget() {
  const int64_t total = int64_t(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGE_SIZE);
  return total / 10 * 8;
}

// An attempt that failed this way is worth another try; a missing function or a rejected
// invocation is not.
bool retryable(p::Status s) {
  return s == p::Status::error || s == p::Status::timeout || s == p::Status::out_of_memory ||
         s == p::Status::cpu_limit || s == p::Status::crashed;
}

int64_t header_ns(const broker::delivery& d, const char* key) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(d.msg.get(), key, &value) != NATS_OK || !value) return 0;
  return std::strtoll(value, nullptr, 10);
}

std::string one_line(std::string_view text, size_t max) {
  std::string out(text.substr(0, max));
  std::replace_if(out.begin(), out.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return out;
}

// Calls `attempt` until it succeeds or startup_patience has passed; throws then.
template <class F>
auto must(F&& attempt, const std::string& what) {
  const auto give_up = std::chrono::steady_clock::now() + startup_patience;
  auto r = attempt();
  while (!r && std::chrono::steady_clock::now() < give_up) {
    logger("node")->warn("{}: {}; trying again", what, r.error().message());
    std::this_thread::sleep_for(1s);
    r = attempt();
  }
  if (!r) throw std::runtime_error(what + ": " + r.error().message());
  if constexpr (!std::is_void_v<typename decltype(r)::value_type>) return std::move(*r);
}

// A function with labels runs only on nodes that have each of them.
bool labels_match(const p::FunctionSpec& spec, const std::map<std::string, std::string>& node_labels) {
  if (!spec.labels()) return true;
  return std::ranges::all_of(*spec.labels(), [&](const p::KeyValue* l) {
    auto it = node_labels.find(std::string(p::view(l->key())));
    return it != node_labels.end() && it->second == p::view(l->value());
  });
}

flatbuffers::Offset<p::Result> encode_result(flatbuffers::FlatBufferBuilder& b,
                                             const invocation_info& inv, const outcome& out,
                                             const std::string& node_id) {
  const p::Timings timings(inv.published_ns, out.started_ns, out.finished_ns);
  return p::CreateResult(b, b.CreateString(inv.id), out.status, b.CreateVector(out.output),
                         b.CreateString(out.error), b.CreateString(node_id), out.cold_start,
                         &timings, inv.attempt, inv.correlation, b.CreateString(out.content_type));
}

}  // namespace

int64_t node::now_ms() { return mono_now_ns() / 1'000'000; }

node::node(node_options opts) : opts_(std::move(opts)), zmq_(1) {
  if (opts_.node_id.empty()) opts_.node_id = default_node_id();
  if (opts_.memory_bytes <= 0) opts_.memory_bytes = default_memory_budget();
  started_ns_ = unix_now_ns();
  auto log = logger("node");
  // First, so that a taken port fails the start before anything else is set up.
  capacity_ = std::make_unique<capacity>(
      opts_.slots, opts_.memory_bytes,
      [this](const std::string& consumer, uint32_t batch, pull_kind kind) {
        return pulls_->request(consumer, batch,
                               kind == pull_kind::warm ? warm_request_expiry : std::chrono::milliseconds(0));
      },
      [this](const std::string& function) { return uint32_t(executor_->warm_of(function)); });
  metrics_endpoint_ = std::make_unique<metrics_endpoint>(
      opts_.metrics_listen, [this] { return metrics_.render(capacity_->running()); });
  log->info("metrics at {}", metrics_endpoint_->url());

  auto conn = broker::connection::connect({.urls = opts_.nats_urls, .name = opts_.node_id});
  if (!conn) throw std::runtime_error(conn.error().message());  // names the URL
  conn_ = std::move(*conn);
  must([&] { return broker::bootstrap(*conn_); }, "cannot set up JetStream at " + opts_.nats_urls);
  code_bucket_ = must([&] { return broker::kv_bucket::open(*conn_, broker::code_bucket); }, "KV FNMESH_CODE");
  nodes_bucket_ = must([&] { return broker::kv_bucket::open(*conn_, broker::nodes_bucket); }, "KV FNMESH_NODES");
  code_ = std::make_unique<code_cache>(*code_bucket_, opts_.dir / "code");
  reporter_ = std::make_unique<reporter>(
      zmq_, reporter_options{.node_id = opts_.node_id,
                             .collector = opts_.collector,
                             .spool_dir = opts_.dir / "spool"});
  sender_ = std::make_unique<result_sender>(zmq_);
  opts_.runtime.keep_warm = opts_.keep_warm;
  opts_.runtime.memory_budget_bytes = opts_.memory_bytes;
  opts_.runtime.sandboxes.node_id = cgroup_name(opts_.node_id, opts_.dir);
  if (opts_.runtime.sandboxes.staging.empty()) opts_.runtime.sandboxes.staging = opts_.dir / "sandbox-root";
  follow_ups_ = std::make_unique<follow_ups>();
  logs_ = std::make_unique<broker::log_publisher>(*conn_);
  opts_.runtime.on_log = [this](const broker::log_line& line) {
    auto l = line;
    l.node_id = opts_.node_id;
    logs_->publish(l);
  };
  executor_ = std::make_unique<executor>(opts_.runtime);
  log->info("sandboxes: {}", executor_->describe());

  pulls_ = must([&] {
                  return broker::pull_requests::open(
                      *conn_, std::string(broker::invoke_stream),
                      [this](broker::delivery&& d) { on_delivery(std::move(d)); },
                      [this](uint64_t id, uint32_t, int status) {
                        capacity_->on_request_end(id, status, now_ms());
                        if (!stopping_) capacity_->refill(now_ms());
                      });
                },
                "cannot subscribe for pull requests");
  backlog_ = must([&] {
                    return backlog::open(*conn_, [this](std::string_view tenant, std::string_view function) {
                      capacity_->on_backlog(broker::consumer_name(tenant, function));
                      if (!stopping_) capacity_->refill(now_ms());
                    });
                  },
                  "cannot subscribe to doorbells");
  registry_ = must([&] {
                     return broker::function_registry::open(
                         *conn_, [this](const std::string&, const broker::function_ptr&) {
                           on_functions_changed();
                         });
                   },
                   "cannot read KV FNMESH_FUNCTIONS");
  registry_view_ = registry_.get();
  on_functions_changed();
  heartbeat_ = std::thread([this] { heartbeat_loop(); });
  log->info("node {} ready: {} slots, {} MiB, nats {}, collector {}", opts_.node_id, opts_.slots,
            opts_.memory_bytes >> 20, opts_.nats_urls, opts_.collector);
}

node::~node() {
  metrics_endpoint_.reset();
  stopping_ = true;
  closing_ = true;
  if (capacity_) capacity_->stop();
  if (heartbeat_.joinable()) heartbeat_.join();
  backlog_.reset();
  pulls_.reset();     // no delivery arrives after this
  registry_.reset();  // joins its watch thread; registry_view_ stays valid until then
  executor_.reset();
  follow_ups_.reset();  // after the executor: its last finishes may still post
  reporter_.reset();
  if (nodes_bucket_) (void)nodes_bucket_->erase(opts_.node_id);
}

void node::on_functions_changed() {
  const auto* registry = registry_view_.load();
  if (!registry) return;  // still starting: the constructor calls again
  std::vector<capacity_function> functions;
  for (const auto& fn : registry->all()) {
    const auto& spec = fn->spec();
    if (!labels_match(spec, opts_.labels)) continue;
    functions.push_back({.consumer = broker::consumer_name(p::view(spec.tenant()), p::view(spec.name())),
                         .function = executor::function_of(spec),
                         .memory_bytes = int64_t(spec.memory_mb()) << 20,
                         .concurrency = spec.concurrency()});
    // Fetch code now so that the first invocation does not wait for it.
    if (auto dir = code_->ensure(std::string(p::view(spec.code_digest()))); !dir)
      logger("node")->warn("code of {} ({}) unavailable: {}", p::view(spec.name()),
                           p::view(spec.code_digest()), dir.error().message());
  }
  capacity_->set_functions(functions);
  if (!stopping_) capacity_->refill(now_ms());
}

void node::on_delivery(broker::delivery&& d) {
  auto log = logger("node");
  const auto memory_held = capacity_->on_delivery(d.consumer, d.request_id);
  if (!memory_held) {
    (void)d.nak(*conn_);  // no room or unknown here: another node takes it at once
    return;
  }
  auto held = std::make_shared<broker::delivery>(std::move(d));
  auto release = [&] {
    capacity_->on_finished(held->consumer, *memory_held);
    capacity_->refill(now_ms());
  };
  const auto* inv = p::verified<p::Invocation>(held->data());
  if (!inv) {
    log->warn("dropped a malformed invocation from consumer {} (stream seq {})", held->consumer,
              held->stream_seq);
    (void)held->term(*conn_);
    release();
    return;
  }
  // A retry waits out its back-off on the server, not in a slot here.
  if (const int64_t not_before = header_ns(*held, not_before_header); not_before > unix_now_ns()) {
    (void)held->nak(*conn_, std::chrono::nanoseconds(not_before - unix_now_ns()));
    release();
    return;
  }
  invocation_info info{.id = std::string(p::view(inv->id())),
                       .tenant = std::string(p::view(inv->tenant())),
                       .function = std::string(p::view(inv->function())),
                       .reply_endpoint = inv->reply() ? std::string(p::view(inv->reply()->endpoint())) : "",
                       .correlation = inv->reply() ? inv->reply()->correlation() : 0,
                       .callback = inv->reply() && inv->reply()->callback(),
                       .trigger = inv->trigger(),
                       .published_ns = inv->published_ns(),
                       .attempt = std::max<uint32_t>(1, inv->attempt()),
                       .memory_held = *memory_held};
  if (info.tenant.empty()) info.tenant = broker::default_tenant;
  auto fn = registry_view_.load()->find(info.tenant, info.function);
  const bool async = info.reply_endpoint.empty() || info.callback;
  if (async && fn && info.published_ns > 0 &&
      unix_now_ns() - info.published_ns > int64_t(fn->spec().max_event_age_s()) * 1'000'000'000) {
    release();
    follow_ups_->post([this, held, info, max_age = fn->spec().max_event_age_s()] {
      if (auto dead = dead_letter(*held, info, "expired",
                                  "older than the function's max event age of " + std::to_string(max_age) + " s",
                                  info.attempt - 1))
        (void)held->ack(*conn_);
      else
        nak_unfollowed(*held, info, dead.error());
    });
    return;
  }
  {
    const int64_t every = fn ? std::chrono::milliseconds(broker::ack_wait(fn->spec())).count() / 3 : 10'000;
    std::lock_guard lock(in_flight_mutex_);
    if (!in_flight_.emplace(info.id, running_invocation{held, every, now_ms() + every}).second) {
      log->warn("invocation {} was delivered again while it runs here; the running one answers", info.id);
      release();
      return;
    }
  }
  outcome refused;
  std::filesystem::path code_dir;
  if (!fn) {
    refused.status = p::Status::no_such_function;
    refused.error = "no such function: " + info.function;
  } else if (auto dir = code_->ensure(std::string(p::view(fn->spec().code_digest()))); !dir) {
    refused.status = p::Status::error;
    refused.error = "code bundle unavailable: " + dir.error().message();
  } else {
    code_dir = *dir;
  }
  auto done = [this, fn, held, info](outcome&& out) { finish(fn, held, std::move(out), info); };
  if (!code_dir.empty()) {
    const auto timeout = std::chrono::milliseconds(int64_t(fn->spec().timeout_s()) * 1000);
    std::vector<uint8_t> buffer(held->data().begin(), held->data().end());
    executor_->run(work{.function = fn,
                        .code_dir = std::move(code_dir),
                        .invocation = std::move(buffer),
                        .timeout = timeout,
                        .done = std::move(done)});
  } else {
    refused.started_ns = refused.finished_ns = unix_now_ns();
    executor_->post([done, refused]() mutable { done(std::move(refused)); });
  }
}

void node::finish(const broker::function_ptr& fn, const std::shared_ptr<broker::delivery>& d, outcome&& out,
                  const invocation_info& inv) {
  // The slot is free before the caller hears back: an idle warm sandbox is waiting on the
  // server again by the time the caller's next invocation arrives.
  capacity_->on_finished(d->consumer, inv.memory_held);
  if (!stopping_) capacity_->refill(now_ms());
  if (out.output.size() > opts_.limits.result) {
    out.error = "result of " + std::to_string(out.output.size()) + " bytes is over the limit of " +
                std::to_string(opts_.limits.result) + " bytes";
    out.status = p::Status::error;
    out.output.clear();
  }
  // Sync callers get every answer; an async attempt that fails is followed by a retry or a
  // dead letter, and only the final attempt's result goes to a callback.
  const bool async = inv.reply_endpoint.empty() || inv.callback;
  const bool failed_async = async && out.status != p::Status::ok;
  const bool retried = failed_async && fn && retryable(out.status) && inv.attempt <= fn->spec().retries();
  if (!inv.reply_endpoint.empty() && !retried) {
    flatbuffers::FlatBufferBuilder b(256 + out.output.size());
    b.Finish(encode_result(b, inv, out, opts_.node_id));
    if (auto sent = sender_->send(inv.reply_endpoint, p::bytes(b), now_ms()); !sent)
      logger("node")->warn("invocation {}: bad reply endpoint {}", inv.id, inv.reply_endpoint);
  }

  metrics_.count(inv.tenant, inv.function, out.status, out.cpu_user_ns + out.cpu_system_ns, out.source);
  flatbuffers::FlatBufferBuilder b(512 + out.output.size());
  auto spooled = reporter_->record([&](uint64_t seq) {
    const int64_t wall_ns = std::max<int64_t>(0, out.finished_ns - out.started_ns);
    const int64_t memory_limit = fn ? int64_t(fn->spec().memory_mb()) << 20 : 0;
    auto result = encode_result(b, inv, out, opts_.node_id);
    auto usage = p::CreateUsage(
        b, b.CreateString(inv.id), inv.attempt, b.CreateString(inv.tenant),
        b.CreateString(inv.function), b.CreateString(opts_.node_id), seq, wall_ns,
        out.cpu_user_ns, out.cpu_system_ns, out.peak_memory_bytes, memory_limit, out.net_rx_bytes,
        out.net_tx_bytes, out.cold_start, std::max<int64_t>(1, (wall_ns + 999'999) / 1'000'000),
        out.source, inv.trigger);
    b.Finish(p::CreateCompletion(b, result, usage));
    return p::bytes(b);
  });
  // Billing first, then what follows a failure, then the ack: a node that dies in between
  // runs the attempt again elsewhere, and the collector and JetStream drop the copies.
  if (!spooled) {
    logger("node")->error("invocation {}: spool append failed: {}; it runs again", inv.id, spooled.error().message());
    (void)d->nak(*conn_, republish_delay);
  } else if (!failed_async) {
    (void)d->ack(*conn_);
  } else {
    // Still in flight (its in-progress acks go on) until the follow-up has acked it.
    follow_ups_->post([this, fn, d, inv, retried, status = std::string(p::EnumNameStatus(out.status)),
                       error = std::move(out.error)] {
      if (auto followed = retried ? retry(fn, *d, inv) : dead_letter(*d, inv, status, error, inv.attempt))
        (void)d->ack(*conn_);
      else
        nak_unfollowed(*d, inv, followed.error());
      forget(inv.id);
    });
    return;
  }
  forget(inv.id);
}

void node::nak_unfollowed(const broker::delivery& d, const invocation_info& inv, std::error_code why) {
  logger("node")->error("invocation {}: NATS did not take what follows its failure ({}); it runs again",
                        inv.id, why.message());
  (void)d.nak(*conn_, republish_delay);
}

void node::forget(const std::string& invocation_id) {
  std::lock_guard lock(in_flight_mutex_);
  in_flight_.erase(invocation_id);
}

result<void> node::retry(const broker::function_ptr& fn, const broker::delivery& d,
                         const invocation_info& inv) {
  const auto* original = flatbuffers::GetRoot<p::Invocation>(d.data().data());
  const int64_t delay_ns = int64_t(fn->spec().retry_delay_s()) * 1'000'000'000 << (inv.attempt - 1);
  const uint32_t next = inv.attempt + 1;
  logger("node")->info("invocation {} of {}: attempt {} failed; attempt {} in {} s", inv.id, inv.function,
                       inv.attempt, next, delay_ns / 1'000'000'000);
  return conn_->js_publish(natsMsg_GetSubject(d.msg.get()),
                           broker::copy_invocation(*original, {.attempt = next}),
                           inv.id + "." + std::to_string(next),
                           {{not_before_header, std::to_string(unix_now_ns() + delay_ns)}});
}

result<void> node::dead_letter(const broker::delivery& d, const invocation_info& inv,
                               std::string_view status, std::string_view error, uint32_t attempts) {
  const auto* original = flatbuffers::GetRoot<p::Invocation>(d.data().data());
  logger("node")->warn("invocation {} of {} goes to the dead-letter queue after {} attempt(s): {}: {}",
                       inv.id, inv.function, attempts, status, one_line(error, 200));
  return conn_->js_publish(broker::dlq_subject(inv.tenant, inv.function),
                           broker::copy_invocation(*original, {.attempt = inv.attempt}), inv.id,
                           {{"Fnmesh-Status", std::string(status)},
                            {"Fnmesh-Error", one_line(error, max_dead_letter_error)},
                            {"Fnmesh-Attempts", std::to_string(attempts)},
                            {"Fnmesh-Node", opts_.node_id},
                            {"Fnmesh-Failed-Ns", std::to_string(unix_now_ns())}});
}

size_t node::unacked() {
  std::lock_guard lock(in_flight_mutex_);
  return in_flight_.size();
}

void node::send_progress() {
  const int64_t now = now_ms();
  std::lock_guard lock(in_flight_mutex_);
  for (auto& [_, r] : in_flight_)
    if (now >= r.next_progress_ms) {
      (void)r.delivery->in_progress(*conn_);
      r.next_progress_ms = now + r.progress_every_ms;
    }
}

void node::heartbeat_loop() {
  int64_t next_beat = 0;
  // Until the node is destroyed: a draining node still beats and keeps its runs alive.
  while (!closing_) {
    if (!stopping_)
      if (auto polled = backlog_->poll(); !polled)
        logger("node")->debug("pending counts unavailable: {}", polled.error().message());
    capacity_->refill(now_ms());  // requests past their back-off (none once draining)
    send_progress();
    if (now_ms() >= next_beat) {
      next_beat = now_ms() + std::chrono::milliseconds(opts_.heartbeat).count();
      flatbuffers::FlatBufferBuilder b;
      std::vector<flatbuffers::Offset<p::KeyValue>> warm;
      for (const auto& [function, count] : executor_->warm_by_function())
        warm.push_back(p::CreateKeyValueDirect(b, function.c_str(), std::to_string(count).c_str()));
      std::vector<flatbuffers::Offset<p::KeyValue>> labels;
      for (const auto& [key, value] : opts_.labels)
        labels.push_back(p::CreateKeyValueDirect(b, key.c_str(), value.c_str()));
      auto label_vector = b.CreateVectorOfSortedTables(&labels);
      b.Finish(p::CreateHeartbeat(b, b.CreateString(opts_.node_id), label_vector, opts_.memory_bytes,
                                  opts_.slots, capacity_->running(),
                                  b.CreateVectorOfSortedTables(&warm),
                                  b.CreateString(opts_.collector), started_ns_, unix_now_ns()));
      if (auto ok = nodes_bucket_->put(opts_.node_id, p::bytes(b)); !ok)
        logger("node")->warn("heartbeat failed: {}", ok.error().message());
    }
    for (int i = 0; i < 10 && !closing_; ++i) std::this_thread::sleep_for(100ms);
  }
}

void node::drain(std::chrono::milliseconds flush_timeout) {
  auto log = logger("node");
  stopping_ = true;
  capacity_->stop();
  log->info("draining: {} invocations running", capacity_->running());
  // Standing pull requests may still be answered while what runs finishes: those
  // deliveries are nak'ed (capacity stopped), so another node takes them at once. Once the
  // subscription is gone, a delivery would wait out its ack wait instead.
  while (capacity_->running() > 0 || unacked() > 0) std::this_thread::sleep_for(20ms);
  pulls_->stop();
  executor_->drain();
  if (!reporter_->flush(flush_timeout))
    log->warn("{} completions stay in the spool for the next start", reporter_->unacked());
}

}  // namespace fnmesh::node
