#include "common/base64.h"

namespace fnmesh {

std::string base64(std::span<const uint8_t> in) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    const uint32_t v = uint32_t(in[i]) << 16 | (i + 1 < in.size() ? uint32_t(in[i + 1]) << 8 : 0) |
                       (i + 2 < in.size() ? uint32_t(in[i + 2]) : 0);
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += i + 1 < in.size() ? alphabet[v >> 6 & 63] : '=';
    out += i + 2 < in.size() ? alphabet[v & 63] : '=';
  }
  return out;
}

}  // namespace fnmesh
