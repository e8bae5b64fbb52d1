#include "common/allow_entry.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace fnmesh {
namespace {

std::unexpected<std::string> bad(std::string why) { return std::unexpected(std::move(why)); }

std::expected<int, std::string> number(std::string_view s, int lo, int hi, std::string_view what) {
  int v = -1;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi)
    return bad(std::string(what) + " " + std::string(s) + " is not " + std::to_string(lo) + "-" + std::to_string(hi));
  return v;
}

constexpr std::array<uint8_t, 12> v4_mapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_v4(const allow_entry& e) {
  return e.prefix >= 96 && std::equal(v4_mapped.begin(), v4_mapped.end(), e.address.begin());
}

}  // namespace

std::expected<allow_text, std::string> split_allow_entry(std::string_view text) {
  if (text.empty()) return bad("the entry is empty");
  if (text.find_first_of(" \t\r\n") != std::string_view::npos) return bad("the entry has a space in it");
  allow_text out;
  std::string_view host = text, port;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("'[' without ']'");
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return bad("after ']' comes :port");
      port = rest.substr(1);
      if (port.empty()) return bad("the port is missing after ':'");
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {  // host:port (an IPv6 address has more)
    const size_t colon = text.find(':');
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) return bad("the port is missing after ':'");
  }
  if (const size_t slash = host.find('/'); slash != std::string_view::npos) {
    auto p = number(host.substr(slash + 1), 0, 128, "prefix length");
    if (!p) return bad(p.error());
    out.prefix = *p;
    host = host.substr(0, slash);
  }
  if (host.empty()) return bad("the address is missing");
  if (!port.empty()) {
    auto p = number(port, 1, 65535, "port");
    if (!p) return bad(p.error());
    out.port = uint16_t(*p);
  }
  out.host = host;
  return out;
}

std::expected<allow_entry, std::string> parse_allow_entry(std::string_view text) {
  auto parts = split_allow_entry(text);
  if (!parts) return bad(parts.error());
  allow_entry e;
  e.port = parts->port;
  in_addr v4{};
  if (::inet_pton(AF_INET, parts->host.c_str(), &v4) == 1) {
    if (parts->prefix > 32) return bad("prefix length " + std::to_string(parts->prefix) + " is not 0-32");
    std::copy(v4_mapped.begin(), v4_mapped.end(), e.address.begin());
    std::memcpy(e.address.data() + 12, &v4, 4);
    e.prefix = uint8_t(96 + (parts->prefix < 0 ? 32 : parts->prefix));
  } else if (::inet_pton(AF_INET6, parts->host.c_str(), e.address.data()) == 1) {
    e.prefix = uint8_t(parts->prefix < 0 ? 128 : parts->prefix);
  } else {
    return bad(parts->host + " is not an IPv4 or IPv6 address");
  }
  for (size_t bit = e.prefix; bit < 128; ++bit) e.address[bit / 8] &= uint8_t(~(0x80u >> (bit % 8)));
  return e;
}

std::string to_string(const allow_entry& e) {
  char text[INET6_ADDRSTRLEN] = {};
  std::string out;
  if (is_v4(e)) {
    ::inet_ntop(AF_INET, e.address.data() + 12, text, sizeof text);
    out = text;
    if (e.prefix != 128) out += "/" + std::to_string(e.prefix - 96);
  } else {
    ::inet_ntop(AF_INET6, e.address.data(), text, sizeof text);
    out = text;
    if (e.prefix != 128) out += "/" + std::to_string(e.prefix);
    if (e.port) out = "[" + out + "]";
  }
  if (e.port) out += ":" + std::to_string(e.port);
  return out;
}

}  // namespace fnmesh
