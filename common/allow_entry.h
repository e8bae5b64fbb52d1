#pragma once
// allow_entry: one entry of a function's network allow-list (FunctionSpec.allow), read by
// `fnmesh deploy` (which resolves host names first) and by the node (which hands it to the
// kernel). An entry is an IPv4 or IPv6 network with an optional port:
//   10.1.2.3   10.0.0.0/8   10.1.2.3:443   10.0.0.0/8:443
//   ::1   2001:db8::/32   [2001:db8::1]:443   [2001:db8::/32]:443
// and, before deploy resolves it, a host name: example.com, example.com:443.
// An IPv4 network is held in its IPv4-mapped IPv6 form (::ffff:a.b.c.d, prefix + 96): the
// form the kernel shows for an IPv4 address on an IPv6 socket.
#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace fnmesh {

// A function may list this many entries (after host names are resolved).
inline constexpr size_t max_allow_entries = 64;

struct allow_entry {
  std::array<uint8_t, 16> address{};  // network byte order; bits past `prefix` are zero
  uint8_t prefix = 128;               // leading bits of `address` that must match
  uint16_t port = 0;                  // 0: every port
  bool operator==(const allow_entry&) const = default;
};

// An entry's text taken apart: `host` is an address or a name (brackets removed).
struct allow_text {
  std::string host;
  int prefix = -1;    // -1: none given
  uint16_t port = 0;  // 0: none given
};

// The error says what is wrong, e.g. "port 70000 is not 1-65535".
std::expected<allow_text, std::string> split_allow_entry(std::string_view text);
// A numeric entry; a host name is an error.
std::expected<allow_entry, std::string> parse_allow_entry(std::string_view text);
// The canonical text of an entry (10.0.0.0/8:443, [::1]:80, 2001:db8::/32), which
// parse_allow_entry reads back.
std::string to_string(const allow_entry& e);

}  // namespace fnmesh
