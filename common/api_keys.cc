#include "common/api_keys.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/names.h"

namespace fnmesh {
namespace {

// SHA-256, raw bytes: only ever compared here.
std::string digest(std::string_view key) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(md), len);
}

[[noreturn]] void fail(const std::string& file, const YAML::Node& at, const std::string& what) {
  throw std::runtime_error(file + ":" + std::to_string(at.Mark().line + 1) + ": " + what);
}

}  // namespace

api_keys api_keys::load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read API keys from " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), file.string());
}

api_keys api_keys::parse(std::string_view yaml, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(file + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  if (!root.IsMap() || root.size() == 0)
    throw std::runtime_error(file + ": must map each tenant to its list of keys (default: [<key>])");
  api_keys keys;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string tenant = it->first.as<std::string>("");
    if (!valid_name(tenant))
      fail(file, it->first, "tenant '" + tenant + "' must match [a-z0-9][a-z0-9-]{0,62}");
    const YAML::Node list = it->second;
    if (!list.IsSequence() || list.size() == 0)
      fail(file, list, tenant + ": must be a list of keys");
    for (const auto& item : list) {
      const std::string key = item.IsScalar() ? item.Scalar() : "";
      if (key.size() < min_api_key_length || key.find_first_of(" \t\r\n") != std::string::npos)
        fail(file, item, tenant + ": a key must be at least " + std::to_string(min_api_key_length) +
                             " characters with no spaces");
      if (!keys.tenant_by_digest_.emplace(digest(key), tenant).second)
        fail(file, item, tenant + ": a key given twice");
    }
  }
  return keys;
}

std::optional<std::string> api_keys::tenant_of(std::string_view authorization) const {
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.size() <= scheme.size() ||
      !std::equal(scheme.begin(), scheme.end(), authorization.begin(),
                  [](unsigned char a, unsigned char b) { return std::tolower(a) == std::tolower(b); }))
    return std::nullopt;
  auto it = tenant_by_digest_.find(digest(authorization.substr(scheme.size())));
  if (it == tenant_by_digest_.end()) return std::nullopt;
  return it->second;
}

}  // namespace fnmesh
