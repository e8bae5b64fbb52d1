#include "broker/client/pull_requests.h"

#include <charconv>
#include <cstring>
#include <vector>

#include "common/clock.h"
#include "common/errc.h"
#include "common/log.h"

namespace fnmesh::broker {
namespace {

auto log() { return fnmesh::logger("pull"); }

constexpr int64_t give_up_grace_ns = 2'000'000'000;

uint64_t to_u64(std::string_view s) noexcept {
  uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

struct ack_info {
  std::string_view consumer;
  uint64_t delivered = 0;
  uint64_t stream_seq = 0;
};

// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or the form with
// <domain>.<account hash> after ACK and a trailing token.
bool parse_ack_subject(std::string_view reply, ack_info& out) noexcept {
  std::string_view tok[16];
  size_t n = 0, pos = 0;
  while (n < 16) {
    size_t dot = reply.find('.', pos);
    tok[n++] = reply.substr(pos, dot == reply.npos ? reply.npos : dot - pos);
    if (dot == reply.npos) break;
    pos = dot + 1;
  }
  if (n < 9 || tok[0] != "$JS" || tok[1] != "ACK") return false;
  size_t base = n == 9 ? 2 : (n >= 11 ? 4 : 0);
  if (base == 0) return false;
  out.consumer = tok[base + 1];
  out.delivered = to_u64(tok[base + 2]);
  out.stream_seq = to_u64(tok[base + 3]);
  return true;
}

result<void> reply_with(connection& conn, const msg_ptr& msg, std::string_view body) {
  const char* reply = msg ? natsMsg_GetReply(msg.get()) : nullptr;
  if (!reply || !*reply) return fail(errc::invalid_argument);
  natsStatus s = natsConnection_Publish(conn.nats(), reply, body.data(), int(body.size()));
  if (s != NATS_OK) return fail(make_nats_error(s));
  return {};
}

void on_sub_complete(void* closure) noexcept {
  auto* fn = static_cast<std::function<void()>*>(closure);
  (*fn)();
  delete fn;
}

}  // namespace

std::span<const uint8_t> delivery::data() const noexcept {
  if (!msg) return {};
  return {reinterpret_cast<const uint8_t*>(natsMsg_GetData(msg.get())),
          size_t(natsMsg_GetDataLength(msg.get()))};
}
result<void> delivery::ack(connection& conn) const { return reply_with(conn, msg, "+ACK"); }
result<void> delivery::nak(connection& conn, std::chrono::nanoseconds delay) const {
  if (delay.count() <= 0) return reply_with(conn, msg, "-NAK");
  return reply_with(conn, msg, "-NAK {\"delay\": " + std::to_string(delay.count()) + "}");
}
result<void> delivery::in_progress(connection& conn) const {
  return reply_with(conn, msg, "+WPI");
}
result<void> delivery::term(connection& conn) const { return reply_with(conn, msg, "+TERM"); }

result<std::unique_ptr<pull_requests>> pull_requests::open(connection& conn, std::string stream,
                                                           delivery_handler on_delivery,
                                                           end_handler on_end) {
  std::unique_ptr<pull_requests> self(new pull_requests());
  self->conn_ = &conn;
  self->stream_ = std::move(stream);
  self->on_delivery_ = std::move(on_delivery);
  self->on_end_ = std::move(on_end);

  natsInbox* inbox = nullptr;
  if (natsStatus s = natsInbox_Create(&inbox); s != NATS_OK) return fail(make_nats_error(s));
  self->inbox_prefix_ = inbox;
  natsInbox_Destroy(inbox);

  std::string wildcard = self->inbox_prefix_ + ".*";
  natsSubscription* sub = nullptr;
  natsStatus s = natsConnection_Subscribe(&sub, conn.nats(), wildcard.c_str(),
                                          &pull_requests::on_message, self.get());
  if (s != NATS_OK) return fail(make_nats_error(s));
  self->sub_ = sub;
  natsSubscription_SetPendingLimits(sub, 1 << 20, 1 << 30);
  auto* raw = self.get();
  auto* done = new std::function<void()>([raw] {
    std::lock_guard lock(raw->mutex_);
    raw->sub_done_ = true;
    raw->sub_done_cv_.notify_all();
  });
  if (natsSubscription_SetOnCompleteCB(sub, on_sub_complete, done) != NATS_OK) {
    delete done;
    std::lock_guard lock(raw->mutex_);
    raw->sub_done_ = true;
  }
  const std::string elected = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED." + self->stream_ + ".*";
  s = natsConnection_Subscribe(&self->leader_sub_, conn.nats(), elected.c_str(), &pull_requests::on_leader_elected,
                               raw);
  if (s != NATS_OK) return fail(make_nats_error(s));
  self->reconnect_listener_ = conn.on_reconnect([raw] { raw->lose({}); });
  // Make sure the server knows the subscriptions before any request names them.
  if (auto f = conn.flush(); !f) return fail(f.error());
  self->sweeper_ = std::thread([raw] { raw->sweep(); });
  return self;
}

pull_requests::~pull_requests() {
  if (reconnect_listener_) conn_->forget_reconnect(reconnect_listener_);
  if (leader_sub_) {
    natsSubscription_Unsubscribe(leader_sub_);
    natsSubscription_Destroy(leader_sub_);
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  if (sub_) {
    natsSubscription_Unsubscribe(sub_);
    std::unique_lock lock(mutex_);
    sub_done_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return sub_done_; });
    lock.unlock();
    natsSubscription_Destroy(sub_);
  }
}

void pull_requests::stop() {
  if (sub_) natsSubscription_Drain(sub_);
}

size_t pull_requests::outstanding() const {
  std::lock_guard lock(mutex_);
  return pending_.size();
}

result<uint64_t> pull_requests::request(std::string_view consumer, uint32_t batch,
                                        std::chrono::milliseconds expires) {
  if (batch == 0 || consumer.empty()) return fail(errc::invalid_argument);
  std::string subject = "$JS.API.CONSUMER.MSG.NEXT." + stream_ + "." + std::string(consumer);
  std::string body = "{\"batch\":" + std::to_string(batch);
  if (expires.count() > 0)
    body += ",\"expires\":" +
            std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(expires).count());
  else
    body += ",\"no_wait\":true";
  body += "}";
  const int64_t give_up = mono_now_ns() + (expires.count() > 0 ? expires.count() * 1'000'000 : 0) +
                          give_up_grace_ns;

  std::lock_guard lock(mutex_);
  const uint64_t id = next_id_++;
  const std::string reply = inbox_prefix_ + "." + std::to_string(id);
  // Published under the lock so that the local order matches the order on the wire.
  natsStatus s = natsConnection_PublishRequest(conn_->nats(), subject.c_str(), reply.c_str(),
                                               body.data(), int(body.size()));
  if (s != NATS_OK) return fail(make_nats_error(s));
  pending_.emplace(id, pending{std::string(consumer), batch, give_up});
  order_[std::string(consumer)].push_back(id);
  return id;
}

void pull_requests::end_request(uint64_t id, int status) noexcept {
  uint32_t undelivered = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    undelivered = it->second.remaining;
    auto q = order_.find(it->second.consumer);
    if (q != order_.end()) {
      std::erase(q->second, id);
      if (q->second.empty()) order_.erase(q);
    }
    pending_.erase(it);
  }
  try {
    if (on_end_) on_end_(id, undelivered, status);
  } catch (const std::exception& e) {
    log()->error("pull end handler threw: {}", e.what());
  } catch (...) {
    log()->error("pull end handler threw");
  }
}

void pull_requests::lose(std::string_view consumer) noexcept {
  std::vector<uint64_t> gone;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, p] : pending_)
      if (consumer.empty() || p.consumer == consumer) gone.push_back(id);
  }
  if (!gone.empty())
    log()->info("{} pull request(s) of {} lost with their server; asking again", gone.size(),
                consumer.empty() ? "every consumer" : consumer);
  for (uint64_t id : gone) end_request(id, lost);
}

void pull_requests::on_leader_elected(natsConnection*, natsSubscription*, natsMsg* m, void* closure) noexcept {
  msg_ptr msg(m);
  const std::string_view subject = natsMsg_GetSubject(m);
  static_cast<pull_requests*>(closure)->lose(subject.substr(subject.rfind('.') + 1));
}

void pull_requests::sweep() noexcept {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_) break;
    const int64_t now = mono_now_ns();
    std::vector<uint64_t> expired;
    for (const auto& [id, p] : pending_)
      if (p.give_up_ns <= now) expired.push_back(id);
    if (expired.empty()) continue;
    lock.unlock();
    for (uint64_t id : expired) {
      log()->debug("pull request {} got no answer from the server; ending it", id);
      end_request(id, 503);
    }
    lock.lock();
  }
}

void pull_requests::on_message(natsConnection*, natsSubscription*, natsMsg* m,
                               void* closure) noexcept {
  auto* self = static_cast<pull_requests*>(closure);
  msg_ptr msg(m);
  try {
    const char* status = nullptr;
    if (natsMsgHeader_Get(m, "Status", &status) == NATS_OK && status && *status) {
      int code = std::atoi(status);
      if (code == 100) return;  // heartbeat / flow control
      std::string_view subject = natsMsg_GetSubject(m);
      size_t dot = subject.rfind('.');
      uint64_t id = dot == subject.npos ? 0 : to_u64(subject.substr(dot + 1));
      const char* server_pending = nullptr;
      if (natsMsgHeader_Get(m, "Nats-Pending-Messages", &server_pending) == NATS_OK &&
          server_pending) {
        std::lock_guard lock(self->mutex_);
        auto it = self->pending_.find(id);
        if (it != self->pending_.end() && it->second.remaining != to_u64(server_pending))
          log()->debug("pull request {}: server says {} undelivered, attributed {}", id,
                       server_pending, it->second.remaining);
      }
      if (code != 408 && code != 404) {
        const char* desc = nullptr;
        natsMsgHeader_Get(m, "Description", &desc);
        log()->debug("pull request {} ended: {} {}", id, code, desc ? desc : "");
      }
      self->end_request(id, code);
      return;
    }

    const char* reply = natsMsg_GetReply(m);
    ack_info info;
    if (!reply || !parse_ack_subject(reply, info)) {
      log()->warn("unexpected message on the pull inbox (subject {})", natsMsg_GetSubject(m));
      return;
    }
    delivery d;
    d.consumer = std::string(info.consumer);
    d.delivered = info.delivered;
    d.stream_seq = info.stream_seq;
    bool finished = false;
    {
      std::lock_guard lock(self->mutex_);
      auto q = self->order_.find(d.consumer);
      if (q != self->order_.end() && !q->second.empty()) {
        uint64_t id = q->second.front();
        q->second.pop_front();
        auto& p = self->pending_.at(id);
        d.request_id = id;
        if (--p.remaining > 0) {
          q->second.push_back(id);
        } else {
          finished = true;
          self->pending_.erase(id);
          if (q->second.empty()) self->order_.erase(q);
        }
      }
    }
    const uint64_t id = d.request_id;
    d.msg = std::move(msg);
    if (self->on_delivery_) self->on_delivery_(std::move(d));
    if (finished && self->on_end_) self->on_end_(id, 0, 0);
  } catch (const std::exception& e) {
    log()->error("pull delivery handler threw: {}", e.what());
  } catch (...) {
    log()->error("pull delivery handler threw");
  }
}

}  // namespace fnmesh::broker
