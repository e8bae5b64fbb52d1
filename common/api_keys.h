#pragma once
// api_keys: which tenant each bearer key belongs to: the http adapter's API keys
// (--api-keys) and the billing collector's query tokens (--tokens). Read once at start from
// a YAML file that maps each tenant to its keys:
//
//   default: [9f2c5e0b4a7d41e8b3c6f1a2d5e8b0c4]
//   acme:    [k-acme-ci-2026-11-aa41f0, k-acme-laptop-31b7c2e9d4]
//
// Only the keys' SHA-256 digests are kept. Immutable after load: any thread may read it.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace fnmesh {

inline constexpr size_t min_api_key_length = 16;

class api_keys {
 public:
  // Throws std::runtime_error naming the file, line and what is wrong: a tenant name that
  // is not [a-z0-9][a-z0-9-]{0,62}, a key shorter than 16 characters or with spaces, a key
  // given twice, an empty file.
  static api_keys load(const std::filesystem::path& file);
  static api_keys parse(std::string_view yaml, const std::string& file);

  // The tenant whose key an Authorization header value ("Bearer <key>") carries; nullopt
  // when the header is missing, not Bearer, or the key is unknown.
  std::optional<std::string> tenant_of(std::string_view authorization) const;
  size_t size() const noexcept { return tenant_by_digest_.size(); }

 private:
  std::unordered_map<std::string, std::string> tenant_by_digest_;
};

}  // namespace fnmesh
