#include "broker/client/event_id.h"

#include <array>

namespace fnmesh::broker {
namespace {

constexpr std::string_view crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

// FNV-1a over the bytes, then a splitmix64 finaliser so that nearby sequence numbers
// spread over all bits. Byte-wise, so the id does not depend on the host's endianness.
uint64_t hash64(uint64_t seed, uint64_t seq, std::string_view key) noexcept {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  auto mix_byte = [&h](uint8_t b) {
    h ^= b;
    h *= 0x100000001b3ull;
  };
  for (int i = 0; i < 8; ++i) mix_byte(uint8_t(seq >> (8 * i)));
  mix_byte(0);
  for (char c : key) mix_byte(uint8_t(c));
  h += 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

}  // namespace

std::string event_invocation_id(int64_t event_unix_ns, uint64_t stream_seq,
                                std::string_view function_key) {
  const uint64_t ms = event_unix_ns > 0 ? uint64_t(event_unix_ns / 1'000'000) : 0;
  const uint64_t hi = hash64(0x65766e74ull, stream_seq, function_key);  // 16 bits used
  const uint64_t lo = hash64(0x73756273ull, stream_seq, function_key);  // 64 bits used
  unsigned __int128 v = (unsigned __int128)(ms & 0xFFFFFFFFFFFFull) << 80;
  v |= (unsigned __int128)(hi & 0xFFFF) << 64;
  v |= lo;
  std::string out(26, '0');
  for (int i = 25; i >= 0; --i) {
    out[size_t(i)] = crockford[size_t(v & 31)];
    v >>= 5;
  }
  return out;
}

}  // namespace fnmesh::broker
