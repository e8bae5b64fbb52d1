#include "trigger-adapters/fswatch/subscriptions.h"

#include <algorithm>
#include <filesystem>

#include "broker/client/subjects.h"

namespace fnmesh::fswatch {

std::vector<std::string> folders_of(const proto::FunctionSpec& spec, std::string_view tenant) {
  auto spec_tenant = proto::view(spec.tenant());
  if (spec_tenant.empty()) spec_tenant = broker::default_tenant;
  std::vector<std::string> out;
  if (spec_tenant != tenant || !spec.triggers() || !spec.triggers()->files()) return out;
  for (const auto* entry : *spec.triggers()->files()) {
    std::filesystem::path p(proto::view(entry));
    if (!p.is_absolute()) continue;
    std::string folder = p.lexically_normal().string();
    while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
    if (std::find(out.begin(), out.end(), folder) == out.end()) out.push_back(std::move(folder));
  }
  return out;
}

bool subscriptions::set(const std::string& key, std::string function,
                        std::vector<std::string> folders) {
  std::lock_guard lock(mutex_);
  const auto before = folders_locked();
  if (folders.empty())
    by_key_.erase(key);
  else
    by_key_[key] = entry{std::move(function), std::move(folders)};
  return folders_locked() != before;
}

std::set<std::string> subscriptions::folders() const {
  std::lock_guard lock(mutex_);
  return folders_locked();
}

std::set<std::string> subscriptions::folders_locked() const {
  std::set<std::string> out;
  for (const auto& [key, e] : by_key_) out.insert(e.folders.begin(), e.folders.end());
  return out;
}

std::vector<std::string> subscriptions::subscribers(std::string_view folder) const {
  std::vector<std::string> out;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, e] : by_key_)
      if (std::find(e.folders.begin(), e.folders.end(), folder) != e.folders.end())
        out.push_back(e.function);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace fnmesh::fswatch
