#pragma once
// Code bundles: a function folder packed into one CodeBundle buffer, content-addressed by
// sha256 (hex) and stored in KV FNMESH_CODE under that digest (chunked: keys
// <digest>.0, <digest>.1, ... of at most chunk_bytes each, plus <digest> holding the
// chunk count as text).
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "broker/client/kv.h"
#include "common/result.h"

namespace fnmesh::broker {

struct packed_bundle {
  std::vector<uint8_t> buffer;  // a CodeBundle
  std::string digest;           // sha256 hex of buffer
};

std::string sha256_hex(std::span<const uint8_t> bytes);

// Every regular file under `folder` (relative paths, modes kept); skips .git and
// __pycache__. Deterministic: the same folder gives the same digest.
result<packed_bundle> pack_folder(const std::filesystem::path& folder);
// Writes the bundle's files under `dir` (created), refusing paths that escape it; files
// come out 0644, or 0755 when any execute bit was set (sandboxes run as nobody).
result<void> unpack_bundle(std::span<const uint8_t> bundle, const std::filesystem::path& dir);

inline constexpr size_t chunk_bytes = 512u << 10;
result<void> store_bundle(kv_bucket& code, const packed_bundle& bundle);  // idempotent
result<std::vector<uint8_t>> load_bundle(kv_bucket& code, const std::string& digest);  // verifies digest

}  // namespace fnmesh::broker
