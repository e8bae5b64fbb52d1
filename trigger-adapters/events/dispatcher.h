#pragma once
// dispatcher: the events adapter. Pulls events from stream FNMESH_EVENTS through one
// durable pull consumer and publishes one invocation per event per subscribed function
// (FunctionSpec.triggers.events, NATS wildcards), then acks the event. A redelivered event
// republishes only the invocations not stored yet (stored_subscribers).
#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "broker/client/connection.h"
#include "broker/client/function_registry.h"
#include "broker/client/invoker.h"
#include "broker/client/subjects.h"
#include "trigger-adapters/events/stored_subscribers.h"

namespace fnmesh::events_adapter {

struct dispatcher_options {
  std::string tenant = std::string(broker::default_tenant);
  int batch = 64;                                // events per fetch
  std::chrono::milliseconds fetch_wait{500};     // also bounds how long stop() takes
  std::chrono::seconds ack_wait{30};             // redelivery of an event left unacked
  size_t remembered_events = 8192;               // unacked events whose stored subscribers
                                                 // are remembered (> 0)
};

// What the dispatcher did since it started (metrics() renders it); read from any thread.
struct dispatcher_counters {
  std::atomic<uint64_t> events{0};          // events acked
  std::atomic<uint64_t> invocations{0};     // invocations published
  std::atomic<uint64_t> already_stored{0};  // invocations a redelivery did not publish again
  std::atomic<uint64_t> unmatched{0};       // events no function subscribes to
  std::atomic<uint64_t> refused{0};         // invocations the invoker refused (too large, ...)
  std::atomic<uint64_t> retried{0};         // events nak'ed because a publish failed
  std::atomic<uint64_t> malformed{0};       // events without JetStream metadata (dropped)
  std::atomic<uint64_t> fetch_failures{0};  // fetches that failed (NATS down, ...)
};

// The durable consumer name: "events-adapter" for the default tenant, else
// "events-adapter-<tenant>" (each tenant's adapter must see every event).
std::string durable_name(std::string_view tenant);

// The functions of `tenant` in `all` that subscribe to `subject` (the part after
// "fnmesh.events."), each once however many of its patterns match.
std::vector<broker::function_ptr> subscribers(std::span<const broker::function_ptr> all,
                                              std::string_view tenant,
                                              std::string_view subject);

// Owns the pull subscription. run() on one thread; stop() and metrics() from any thread.
class dispatcher {
 public:
  // Creates the durable consumer if missing (AckExplicit, DeliverAll: events stored before
  // the first start are not lost) and binds to it. Fails with a clear message.
  static result<std::unique_ptr<dispatcher>> open(broker::connection& conn,
                                                  broker::function_registry& registry,
                                                  broker::invoker& invoker,
                                                  dispatcher_options opts);
  ~dispatcher();
  dispatcher(const dispatcher&) = delete;
  dispatcher& operator=(const dispatcher&) = delete;

  void run();            // fetches and dispatches until stop()
  void stop() noexcept;  // async-signal-safe
  // The counters in the Prometheus text format (fnmesh_events_*_total); any thread.
  std::string metrics() const;

 private:
  dispatcher(broker::connection& conn, broker::function_registry& registry,
             broker::invoker& invoker, dispatcher_options opts, natsSubscription* sub)
      : conn_(conn), registry_(registry), invoker_(invoker), opts_(std::move(opts)), sub_(sub),
        stored_(opts_.remembered_events) {}
  struct dispatched {
    bool ack = false;  // every subscriber has its invocation stored (or refused it for good)
    uint64_t seq = 0;  // the event's stream sequence; 0 when it has none
  };
  // Publishes the invocations of one event that stored_ does not hold yet and adds those
  // that got stored.
  dispatched dispatch(natsMsg* msg);

  broker::connection& conn_;
  broker::function_registry& registry_;
  broker::invoker& invoker_;
  dispatcher_options opts_;
  natsSubscription* sub_;
  std::atomic<bool> stop_{false};
  dispatcher_counters counters_;
  stored_subscribers stored_;  // until the event's ack has reached the server
};

}  // namespace fnmesh::events_adapter
