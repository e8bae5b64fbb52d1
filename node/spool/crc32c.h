#pragma once
// crc32c: the Castagnoli CRC (iSCSI, ext4, the spool's frame check), table-driven in
// software. Chainable: pass the previous value as `crc` to continue a running checksum.
#include <cstdint>
#include <span>

namespace fnmesh {

uint32_t crc32c(std::span<const uint8_t> bytes, uint32_t crc = 0) noexcept;

}  // namespace fnmesh
