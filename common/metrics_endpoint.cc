#include "common/metrics_endpoint.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "common/clock.h"
#include "common/log.h"

namespace fnmesh {

namespace {

constexpr size_t max_request = 8192;           // a request line and headers; no body is read
constexpr int64_t request_deadline_ms = 2000;  // a slow client cannot hold the thread longer

void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the client went away or stalled past SO_SNDTIMEO
    data.remove_prefix(size_t(n));
  }
}

void respond(int fd, std::string_view status, std::string_view extra_headers, std::string_view body,
             std::string_view content_type = "text/plain; charset=utf-8") {
  std::string head = "HTTP/1.1 ";
  head += status;
  head += "\r\nContent-Type: ";
  head += content_type;
  head += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n";
  head += extra_headers;
  head += "\r\n";
  send_all(fd, head);
  send_all(fd, body);
}

// The request's head (up to its blank line), or what arrived before the deadline.
std::string read_head(int fd) {
  std::string buf;
  const int64_t deadline = mono_now_ns() / 1'000'000 + request_deadline_ms;
  while (buf.size() < max_request && buf.find("\r\n\r\n") == std::string::npos &&
         buf.find("\n\n") == std::string::npos) {
    const int64_t left = deadline - mono_now_ns() / 1'000'000;
    pollfd p{.fd = fd, .events = POLLIN};
    if (left <= 0 || ::poll(&p, 1, int(left)) <= 0) break;
    char chunk[1024];
    const ssize_t n = ::recv(fd, chunk, std::min(sizeof chunk, max_request - buf.size()), 0);
    if (n <= 0) break;
    buf.append(chunk, size_t(n));
  }
  return buf;
}

}  // namespace

std::string prometheus_escape(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void append_metric_header(std::string& out, std::string_view name, std::string_view type,
                          std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ");
  out.append(name).append(" ").append(type).append("\n");
}

void append_metric(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help, uint64_t value) {
  append_metric_header(out, name, type, help);
  out.append(name).append(" ").append(std::to_string(value)).append("\n");
}

metrics_endpoint::metrics_endpoint(const std::string& listen, std::function<std::string()> render)
    : render_(std::move(render)) {
  const auto fail = [&](const std::string& why) {
    return std::runtime_error("cannot serve /metrics on " + listen + ": " + why);
  };
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) throw fail("expected HOST:PORT");
  std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos) throw fail("bad port");

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw fail(::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(found, &::freeaddrinfo);
  int error = 0;
  for (const addrinfo* a = found; a && !listener_; a = a->ai_next) {
    unique_fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    const int one = 1;
    if (fd && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
        ::bind(fd.get(), a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd.get(), 16) == 0)
      listener_ = std::move(fd);
    else
      error = errno;
  }
  if (!listener_) throw fail(std::strerror(error));

  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(bound).sin6_port
                                            : reinterpret_cast<sockaddr_in&>(bound).sin_port);
  const bool v6 = host.find(':') != std::string::npos;
  url_ = "http://" + (v6 ? "[" + host + "]" : host.empty() ? "0.0.0.0" : host) + ":" +
         std::to_string(port_) + "/metrics";
  stop_ = unique_fd(::eventfd(0, EFD_CLOEXEC));
  if (!stop_) throw fail(std::string("eventfd: ") + std::strerror(errno));
  thread_ = std::thread([this] { serve(); });
}

metrics_endpoint::~metrics_endpoint() {
  const uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  thread_.join();
}

void metrics_endpoint::serve() {
  pollfd fds[2] = {{.fd = listener_.get(), .events = POLLIN}, {.fd = stop_.get(), .events = POLLIN}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      logger("metrics")->error("poll failed: {}; /metrics stops answering", std::strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    unique_fd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) continue;  // the client gave up, or out of descriptors for a moment
    const timeval send_timeout{.tv_sec = request_deadline_ms / 1000, .tv_usec = 0};
    ::setsockopt(client.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
    answer(client.get());
  }
}

void metrics_endpoint::answer(int fd) {
  const std::string head = read_head(fd);
  const std::string_view line = std::string_view(head).substr(0, head.find_first_of("\r\n"));
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp1 == 0 || sp2 == sp1 + 1 || !line.substr(sp2 + 1).starts_with("HTTP/"))
    return respond(fd, "400 Bad Request", "", "bad request\n");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (method != "GET") return respond(fd, "405 Method Not Allowed", "Allow: GET\r\n", "only GET\n");
  if (target.substr(0, target.find('?')) != "/metrics") return respond(fd, "404 Not Found", "", "try /metrics\n");
  std::string body;
  try {
    body = render_();
  } catch (const std::exception& e) {
    return respond(fd, "500 Internal Server Error", "", std::string(e.what()) + "\n");
  }
  respond(fd, "200 OK", "", body, "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace fnmesh
