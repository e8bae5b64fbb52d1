#pragma once
// HTTP from a test's side: one request on a fresh connection, and a receiver for the
// callbacks an adapter POSTs. Plain sockets, so that nothing of the adapter's HTTP code
// is on both sides.
#include <atomic>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/unique_fd.h"

namespace fnmesh::test {

struct http_reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// One request on a fresh connection (Connection: close), read to EOF. `send_body` false
// sends only the header (to test limits checked before the body).
http_reply http_call(int port, std::string_view method, std::string_view path,
                     std::string_view body = {}, bool send_body = true,
                     std::string extra_headers = {}, std::optional<size_t> content_length = {});

// A one-connection-at-a-time HTTP receiver for callbacks: answers the first `refuse`
// requests 503, then 200, and keeps what it accepted.
class callback_receiver {
 public:
  explicit callback_receiver(int refuse);
  ~callback_receiver();
  int port() const { return port_; }
  int requests() const { return requests_; }
  std::future<std::string> accepted() { return accepted_.get_future(); }

 private:
  void serve();

  int refuse_;
  unique_fd fd_;
  int port_ = 0;
  std::atomic<int> requests_{0};
  std::promise<std::string> accepted_;
  std::thread thread_;
};

}  // namespace fnmesh::test
