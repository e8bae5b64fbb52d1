#include "tests/support/metrics_page.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <regex>

#include "common/unique_fd.h"

namespace fnmesh::test {

std::string http_get(int port, const std::string& path) {
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{.sin_family = AF_INET, .sin_port = htons(uint16_t(port))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "";
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL);
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) reply.append(buf, size_t(n));
  return reply;
}

double sample(const std::string& text, const std::string& series) {
  const std::string needle = "\n" + series + " ";
  const size_t at = text.find(needle);
  return at == std::string::npos ? -1 : std::stod(text.substr(at + needle.size()));
}

int logged_metrics_port(const child_process& p) {
  std::smatch m;
  const std::string log = p.log_text();
  if (!std::regex_search(log, m, std::regex(R"(metrics at http://127\.0\.0\.1:(\d+)/metrics)")))
    return 0;
  return std::stoi(m[1]);
}

}  // namespace fnmesh::test
