#include "tests/support/http_exchange.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <cstdlib>

namespace fnmesh::test {

http_reply http_call(int port, std::string_view method, std::string_view path,
                     std::string_view body, bool send_body,
                     std::string extra_headers, std::optional<size_t> content_length) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
  timeval tv{30, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = std::string(method) + " " + std::string(path) + " HTTP/1.1\r\n" +
                    "Host: 127.0.0.1\r\nConnection: close\r\n" + extra_headers +
                    "Content-Length: " + std::to_string(content_length.value_or(body.size())) +
                    "\r\n\r\n";
  if (send_body) req += body;
  for (size_t off = 0; off < req.size();) {
    ssize_t n = ::send(fd.get(), req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) and stop reading
    off += size_t(n);
  }
  std::string raw;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, size_t(n));
  }
  http_reply out;
  auto head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos || raw.size() < 12) return out;
  out.status = std::atoi(raw.c_str() + 9);
  size_t line = raw.find("\r\n") + 2;
  while (line < head_end) {
    size_t eol = raw.find("\r\n", line);
    auto colon = raw.find(':', line);
    if (colon != std::string::npos && colon < eol) {
      std::string name = raw.substr(line, colon - line);
      for (auto& c : name) c = char(std::tolower(c));
      size_t v = colon + 1;
      while (v < eol && raw[v] == ' ') ++v;
      out.headers[name] = raw.substr(v, eol - v);
    }
    line = eol + 2;
  }
  out.body = raw.substr(head_end + 4);
  return out;
}

callback_receiver::callback_receiver(int refuse) : refuse_(refuse) {
  fd_ = unique_fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  EXPECT_EQ(::listen(fd_.get(), 8), 0);
  ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

callback_receiver::~callback_receiver() {
  ::shutdown(fd_.get(), SHUT_RDWR);
  thread_.join();
}

void callback_receiver::serve() {
  for (;;) {
    unique_fd c(::accept(fd_.get(), nullptr, nullptr));
    if (!c) return;
    std::string raw;
    char buf[4096];
    size_t need = std::string::npos;
    while (raw.size() < need) {
      ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
      if (n <= 0) break;
      raw.append(buf, size_t(n));
      auto head = raw.find("\r\n\r\n");
      auto cl = raw.find("Content-Length: ");
      if (head != std::string::npos && cl != std::string::npos)
        need = head + 4 + std::stoul(raw.substr(cl + 16));
    }
    const bool accept = ++requests_ > refuse_;
    const std::string answer = accept ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                                      : "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
    ::send(c.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
    if (accept) {
      accepted_.set_value(raw);
      return;
    }
  }
}

}  // namespace fnmesh::test
