#include "broker/client/connection.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::broker {
namespace {

auto log() { return fnmesh::logger("nats"); }

class nats_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "nats"; }
  std::string message(int v) const override {
    return natsStatus_GetText(static_cast<natsStatus>(v));
  }
};

// Errors whose text was composed when they happened (a connect failure names the URL).
// The code's value indexes an interned text; the table is small because only start-up
// failures use it.
class detailed_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "nats"; }
  std::string message(int v) const override {
    std::lock_guard lock(mutex_);
    return v >= 0 && size_t(v) < texts_.size() ? texts_[size_t(v)] : "nats error";
  }
  std::error_code make(std::string text) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < texts_.size(); ++i)
      if (texts_[i] == text) return {int(i), *this};
    if (texts_.size() >= 256) return {0, *this};
    texts_.push_back(std::move(text));
    return {int(texts_.size() - 1), *this};
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> texts_{"nats error"};
};

detailed_category& detailed() {
  static detailed_category instance;
  return instance;
}

struct options_deleter {
  void operator()(natsOptions* o) const noexcept { natsOptions_Destroy(o); }
};

std::vector<std::string> split_urls(const std::string& urls) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= urls.size()) {
    size_t comma = urls.find(',', pos);
    std::string part = urls.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t b = part.find_first_not_of(" \t"), e = part.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(part.substr(b, e - b + 1));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::atomic<uint64_t> async_failures{0};

void on_async_publish_error(jsCtx*, jsPubAckErr* pae, void*) noexcept {
  try {
    async_failures.fetch_add(1, std::memory_order_relaxed);
    const char* subject = pae && pae->Msg ? natsMsg_GetSubject(pae->Msg) : "?";
    log()->warn("async publish to {} failed: {} ({})", subject ? subject : "?",
                pae && pae->ErrText ? pae->ErrText : "",
                pae ? natsStatus_GetText(pae->Err) : "");
  } catch (...) {
  }
}

void on_disconnected(natsConnection* nc, void*) noexcept {
  if (natsConnection_IsClosed(nc)) return;  // our own close
  try { log()->warn("disconnected from NATS"); } catch (...) {}
}

}  // namespace

std::error_code make_nats_error(natsStatus s) noexcept {
  static const nats_category instance;
  return {static_cast<int>(s), instance};
}

result<std::unique_ptr<connection>> connection::connect(const connect_options& opts) {
  auto urls = split_urls(opts.urls);
  if (urls.empty())
    return fail(detailed().make("no NATS URL given"));
  std::vector<const char*> url_ptrs;
  for (const auto& u : urls) url_ptrs.push_back(u.c_str());

  natsOptions* raw = nullptr;
  if (natsStatus s = natsOptions_Create(&raw); s != NATS_OK) return fail(make_nats_error(s));
  std::unique_ptr<natsOptions, options_deleter> o(raw);

  natsStatus s = natsOptions_SetServers(o.get(), url_ptrs.data(), int(url_ptrs.size()));
  if (s == NATS_OK) s = natsOptions_SetName(o.get(), opts.name.c_str());
  if (s == NATS_OK) s = natsOptions_SetSendAsap(o.get(), true);
  if (s == NATS_OK) s = natsOptions_SetTimeout(o.get(), int64_t(opts.timeout.count()));
  if (s == NATS_OK) s = natsOptions_SetNoRandomize(o.get(), false);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o.get(), opts.reconnect);
  if (s == NATS_OK && opts.reconnect) s = natsOptions_SetMaxReconnect(o.get(), -1);
  if (s == NATS_OK && opts.reconnect) s = natsOptions_SetReconnectWait(o.get(), 250);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o.get(), 64 << 20);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o.get(), on_disconnected, nullptr);
  auto listeners = std::make_unique<reconnect_listeners>();
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o.get(), &connection::reconnected, listeners.get());
  if (s != NATS_OK) return fail(make_nats_error(s));

  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, o.get());
  if (s != NATS_OK) {
    const char* last = nats_GetLastError(nullptr);
    std::string reason = last && *last ? last : natsStatus_GetText(s);
    // nats.c prefixes its text with the source location: "(conn.c:2088): ".
    if (reason.starts_with("(")) {
      if (size_t end = reason.find("): "); end != std::string::npos) reason.erase(0, end + 3);
    }
    return fail(detailed().make("cannot reach NATS at " + opts.urls + ": " + reason));
  }

  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 5000;
  jo.PublishAsync.MaxPending = 8192;
  jo.PublishAsync.ErrHandler = on_async_publish_error;
  jsCtx* js = nullptr;
  s = natsConnection_JetStream(&js, nc, &jo);
  if (s != NATS_OK) {
    natsConnection_Destroy(nc);
    return fail(make_nats_error(s));
  }
  return std::unique_ptr<connection>(new connection(nc, js, opts.urls, std::move(listeners)));
}

connection::~connection() {
  if (js_) jsCtx_Destroy(js_);
  if (nc_) {
    natsConnection_FlushTimeout(nc_, 1000);
    natsConnection_Destroy(nc_);
  }
}

uint64_t connection::on_reconnect(std::function<void()> fn) {
  std::lock_guard lock(listeners_->mutex);
  const uint64_t id = listeners_->next_id++;
  listeners_->fns.emplace(id, std::move(fn));
  return id;
}

void connection::forget_reconnect(uint64_t id) {
  std::lock_guard lock(listeners_->mutex);
  listeners_->fns.erase(id);
}

void connection::reconnected(natsConnection* nc, void* closure) noexcept {
  try {
    char url[256] = {};
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    log()->info("reconnected to NATS at {}", url);
    auto* listeners = static_cast<reconnect_listeners*>(closure);
    std::lock_guard lock(listeners->mutex);
    for (const auto& [_, fn] : listeners->fns) fn();
  } catch (const std::exception& e) {
    log()->error("reconnect listener threw: {}", e.what());
  }
}

result<void> connection::publish(std::string_view subject, std::span<const uint8_t> data) {
  std::string subj(subject);
  natsStatus s = natsConnection_Publish(nc_, subj.c_str(), data.data(), int(data.size()));
  if (s != NATS_OK) return fail(make_nats_error(s));
  return {};
}

result<void> connection::js_publish(std::string_view subject, std::span<const uint8_t> data,
                                    std::string_view msg_id, const headers& extra) {
  auto sent = js_publish_once(subject, data, msg_id, extra);
  if (sent || known_servers() < 2) return sent;
  // A cluster elects a new leader or the client moves to another server: the same message
  // id again, so JetStream stores it once however many tries reached it.
  const auto give_up = std::chrono::steady_clock::now() + cluster_publish_patience;
  while (!sent && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    sent = js_publish_once(subject, data, msg_id, extra);
  }
  return sent;
}

size_t connection::known_servers() const noexcept {
  char** servers = nullptr;
  int count = 0;
  if (natsConnection_GetServers(nc_, &servers, &count) != NATS_OK) return 1;
  for (int i = 0; i < count; ++i) free(servers[i]);
  free(servers);
  return size_t(count);
}

result<void> connection::js_publish_once(std::string_view subject, std::span<const uint8_t> data,
                                         std::string_view msg_id, const headers& extra) {
  // Disconnected, the message would wait in nats.c's buffer and the caller for an ack
  // that cannot come: fail at once and let the caller retry.
  if (!connected()) return fail(errc::unavailable);
  std::string subj(subject), id(msg_id);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  if (!id.empty()) po.MsgId = id.c_str();
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subj.c_str(), nullptr, reinterpret_cast<const char*>(data.data()),
                                int(data.size()));
  for (const auto& [key, value] : extra)
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, key.c_str(), value.c_str());
  jsPubAck* ack = nullptr;
  jsErrCode jerr = jsErrCode(0);
  if (s == NATS_OK) s = js_PublishMsg(&ack, js_, msg, &po, &jerr);
  natsMsg_Destroy(msg);
  if (ack) jsPubAck_Destroy(ack);
  if (s != NATS_OK) {
    log()->debug("publish to {} failed: {} (js error {})", subj, natsStatus_GetText(s), int(jerr));
    return fail(make_nats_error(s));
  }
  return {};
}

result<void> connection::js_publish_async(std::string_view subject,
                                          std::span<const uint8_t> data,
                                          std::string_view msg_id) {
  // While reconnecting, acks pile up until nats.c stalls the caller: fail at once instead.
  if (!connected()) return fail(errc::unavailable);
  std::string subj(subject), id(msg_id);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  if (!id.empty()) po.MsgId = id.c_str();
  natsStatus s = js_PublishAsync(js_, subj.c_str(), data.data(), int(data.size()), &po);
  if (s != NATS_OK) return fail(make_nats_error(s));
  return {};
}

bool connection::connected() const noexcept {
  return natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
}

uint64_t connection::async_publish_failures() noexcept {
  return async_failures.load(std::memory_order_relaxed);
}

result<void> connection::js_publish_async_complete(std::chrono::milliseconds timeout) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = int64_t(timeout.count());
  natsStatus s = js_PublishAsyncComplete(js_, &po);
  if (s != NATS_OK) return fail(make_nats_error(s));
  return {};
}

result<void> connection::flush(std::chrono::milliseconds timeout) {
  natsStatus s = natsConnection_FlushTimeout(nc_, int64_t(timeout.count()));
  if (s != NATS_OK) return fail(make_nats_error(s));
  return {};
}

}  // namespace fnmesh::broker
