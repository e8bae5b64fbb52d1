#pragma once
// http_get: the CLI's HTTP client for the collector's JSON API. One GET on a fresh
// connection (Connection: close), synchronous, one deadline for the whole exchange.
// Stateless; any thread.
#include <chrono>
#include <expected>
#include <string>
#include <string_view>

namespace fnmesh::cli {

struct http_response {
  int status = 0;
  std::string body;
};

// GET `target` (path and query, already encoded) from `base_url` (http://HOST:PORT), with
// `Authorization: Bearer <token>` unless `token` is empty. A failure is one sentence that
// names the URL: "cannot connect to http://127.0.0.1:7701: Connection refused".
std::expected<http_response, std::string> http_get(std::string_view base_url, std::string_view target,
                                                   std::string_view token, std::chrono::milliseconds timeout);

// `text` with every byte but RFC 3986's unreserved ones as %XX: a path segment or a query
// value.
std::string percent_encode(std::string_view text);

}  // namespace fnmesh::cli
