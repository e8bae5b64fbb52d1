#include "common/ulid.h"

#include <array>
#include <cstdint>
#include <random>

#include "common/clock.h"

namespace fnmesh {
namespace {
constexpr std::string_view alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
}

std::string new_ulid() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const uint64_t ms = uint64_t(unix_now_ns() / 1'000'000);
  const uint64_t r1 = rng(), r2 = rng();
  // 128 bits: 48 time bits, then 80 random bits.
  unsigned __int128 v = (unsigned __int128)(ms & 0xFFFFFFFFFFFFull) << 80;
  v |= (unsigned __int128)(r1 & 0xFFFF) << 64;
  v |= r2;
  std::string out(26, '0');
  for (int i = 25; i >= 0; --i) {
    out[i] = alphabet[size_t(v & 31)];
    v >>= 5;
  }
  return out;
}

bool is_ulid(std::string_view text) noexcept {
  if (text.size() != 26 || text[0] > '7') return false;
  for (char c : text)
    if (alphabet.find(c) == std::string_view::npos) return false;
  return true;
}

}  // namespace fnmesh
