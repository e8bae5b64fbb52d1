#pragma once
// base64 (RFC 4648, with padding): binary payloads and outputs shown as JSON text.
#include <cstdint>
#include <span>
#include <string>

namespace fnmesh {

std::string base64(std::span<const uint8_t> in);

}  // namespace fnmesh
