#pragma once
// fnmesh native runtime (header-only): what a C++ function's main() calls. serve() reads
// Invocation frames ([u32 little-endian length][FlatBuffers]) from fd 3, calls the
// handler, and writes a Result frame back, one invocation at a time, until the node
// closes the socket. A handler that throws gives status error with e.what().
//
//   int main() {
//     return fnmesh::runtime::serve([](const fnmesh::runtime::request& req) {
//       return std::string(req.payload);
//     });
//   }
//
// Single-threaded; the buffers are reused across invocations.
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <ctime>
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "flatbuffers/proto.h"

namespace fnmesh::runtime {

// One invocation as the handler sees it; the views live until the handler returns.
struct request {
  std::string_view payload;
  std::string_view invocation_id;
  std::string_view tenant;
  std::string_view function;
  std::string_view version;
  std::string_view content_type;
  std::string_view source;          // subject, path or URL that caused it
  proto::Trigger trigger = proto::Trigger::cli;
  uint32_t attempt = 0;
  int64_t deadline_ns = 0;          // unix ns; 0 = none given

  // Milliseconds left before the node kills the worker (-1: no deadline given).
  int64_t remaining_ms() const noexcept {
    if (deadline_ns == 0) return -1;
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
    return deadline_ns > now ? (deadline_ns - now) / 1'000'000 : 0;
  }
};

namespace detail {

// Sleeps in poll() rather than in read(): a reader blocked in read() on a unix socket is
// also woken each time the node drains the reply it sent (write space), a wasted
// cross-CPU wake-up per invocation; poll() waits for POLLIN only.
inline bool wait_readable(int fd) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  for (;;) {
    int r = ::poll(&p, 1, -1);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// Reads exactly n bytes; false on EOF or error.
inline bool read_exact(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
  }
  return true;
}

inline bool write_frame(int fd, const uint8_t* data, size_t size) {
  uint8_t header[4] = {uint8_t(size), uint8_t(size >> 8), uint8_t(size >> 16), uint8_t(size >> 24)};
  size_t sent = 0, total = size + 4;
  while (sent < total) {
    iovec iov[2];
    int n = 0;
    if (sent < 4) {
      iov[n++] = {header + sent, 4 - sent};
      iov[n++] = {const_cast<uint8_t*>(data), size};
    } else {
      iov[n++] = {const_cast<uint8_t*>(data) + (sent - 4), size - (sent - 4)};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = size_t(n);
    ssize_t r = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    sent += size_t(r);
  }
  return true;
}

}  // namespace detail

// Serves invocations until the node closes fd; returns 0 then (1 on an I/O error).
// Handler: std::string(const request&), may throw.
template <class Handler>
int serve(Handler&& handler, int fd = 3) {
  static_assert(std::is_invocable_r_v<std::string, Handler&, const request&>,
                "the handler is std::string(const fnmesh::runtime::request&)");
  std::vector<uint8_t> in;
  flatbuffers::FlatBufferBuilder out(1024);
  for (;;) {
    uint8_t header[4];
    if (!detail::wait_readable(fd) || !detail::read_exact(fd, header, 4)) return 0;
    size_t len = size_t(header[0]) | size_t(header[1]) << 8 | size_t(header[2]) << 16 | size_t(header[3]) << 24;
    if (len > proto::max_message_bytes) return 1;
    in.resize(len);
    if (!detail::read_exact(fd, in.data(), len)) return 0;

    proto::Status status = proto::Status::ok;
    std::string output, error;
    std::string_view id;
    if (const auto* inv = proto::verified<proto::Invocation>(in)) {
      request req;
      req.payload = proto::text(proto::bytes(inv->payload()));
      req.invocation_id = id = proto::view(inv->id());
      req.tenant = proto::view(inv->tenant());
      req.function = proto::view(inv->function());
      req.version = proto::view(inv->version());
      req.content_type = proto::view(inv->content_type());
      req.source = proto::view(inv->source());
      req.trigger = inv->trigger();
      req.attempt = inv->attempt();
      req.deadline_ns = inv->deadline_ns();
      try {
        output = handler(static_cast<const request&>(req));
      } catch (const std::exception& e) {
        status = proto::Status::error;
        error = e.what();
      } catch (...) {
        status = proto::Status::error;
        error = "the handler threw a non-standard exception";
      }
    } else {
      status = proto::Status::error;
      error = "the runtime received a malformed invocation";
    }

    out.Clear();
    auto id_off = out.CreateString(id.data(), id.size());
    auto out_off = out.CreateVector(reinterpret_cast<const uint8_t*>(output.data()), output.size());
    auto err_off = error.empty() ? flatbuffers::Offset<flatbuffers::String>() : out.CreateString(error);
    proto::ResultBuilder rb(out);
    rb.add_invocation_id(id_off);
    rb.add_status(status);
    rb.add_output(out_off);
    if (!error.empty()) rb.add_error(err_off);
    out.Finish(rb.Finish());
    if (!detail::write_frame(fd, out.GetBufferPointer(), out.GetSize())) return 1;
  }
}

}  // namespace fnmesh::runtime
