#include "tools/http_get.h"

#include <utility>  // before Boost 1.74's asio, which uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cctype>
#include <cstdio>
#include <optional>

namespace fnmesh::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

// An activation's output is at most 6 MiB, base64 makes 8; JSON escapes add a little.
constexpr uint64_t max_body = 64ull << 20;

struct host_port {
  std::string host;
  std::string port;
};

// "http://HOST[:PORT][/]" ("[::1]" for IPv6).
std::optional<host_port> parse_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (!url.starts_with(scheme)) return std::nullopt;
  std::string_view authority = url.substr(scheme.size());
  if (authority.ends_with('/')) authority.remove_suffix(1);
  const size_t colon = authority.rfind(':');
  const bool has_port = colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos;
  host_port out{std::string(authority.substr(0, has_port ? colon : authority.size())),
                has_port ? std::string(authority.substr(colon + 1)) : "80"};
  if (out.host.starts_with('[') && out.host.ends_with(']')) out.host = out.host.substr(1, out.host.size() - 2);
  if (out.host.empty() || out.host.find('/') != std::string::npos || out.port.empty() ||
      out.port.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return out;
}

}  // namespace

std::expected<http_response, std::string> http_get(std::string_view base_url, std::string_view target,
                                                   std::string_view token, std::chrono::milliseconds timeout) {
  const std::string url(base_url);
  const auto at = parse_url(base_url);
  if (!at) return std::unexpected("bad URL " + url + ": expected http://HOST:PORT");

  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  tcp::socket socket(ioc);
  bhttp::request<bhttp::empty_body> request(bhttp::verb::get, std::string(target), 11);
  request.set(bhttp::field::host, at->host + ":" + at->port);
  request.set(bhttp::field::user_agent, "fnmesh");
  if (!token.empty()) request.set(bhttp::field::authorization, "Bearer " + std::string(token));
  request.keep_alive(false);
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(max_body);
  std::optional<std::string> error;
  bool answered = false;

  resolver.async_resolve(at->host, at->port, [&](beast::error_code ec, tcp::resolver::results_type found) {
    if (ec) return void(error = "cannot resolve " + at->host + " (" + url + "): " + ec.message());
    asio::async_connect(socket, found, [&](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return void(error = "cannot connect to " + url + ": " + ec.message());
      bhttp::async_write(socket, request, [&](beast::error_code ec, size_t) {
        if (ec) return void(error = "cannot send to " + url + ": " + ec.message());
        bhttp::async_read(socket, buffer, parser, [&](beast::error_code ec, size_t) {
          if (ec) return void(error = "no answer from " + url + ": " + ec.message());
          answered = true;
        });
      });
    });
  });
  ioc.run_for(timeout);
  if (error) return std::unexpected(*error);
  if (!answered) {
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", double(timeout.count()) / 1000);
    return std::unexpected(url + " did not answer within " + seconds + " s");
  }
  return http_response{int(parser.get().result_int()), std::move(parser.get().body())};
}

std::string percent_encode(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += char(c);
    } else {
      out += '%';
      out += "0123456789ABCDEF"[c >> 4];
      out += "0123456789ABCDEF"[c & 15];
    }
  }
  return out;
}

}  // namespace fnmesh::cli
