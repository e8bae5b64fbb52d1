#pragma once
// subscriptions: which functions of one tenant watch which folders (FunctionSpec.triggers
// .files), kept by function key and asked by folder. Thread-safe: the registry's change
// handler writes it, the watcher and the publisher read it.
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flatbuffers/proto.h"

namespace fnmesh::fswatch {

// The folders `spec` watches if it belongs to `tenant` (an empty spec tenant is the
// default one), each absolute and lexically normal without a trailing slash; relative
// entries are skipped. Empty for another tenant's function.
std::vector<std::string> folders_of(const proto::FunctionSpec& spec, std::string_view tenant);

class subscriptions {
 public:
  // Sets the folders of the function `key` ("tenant.function") whose name is `function`;
  // no folders removes it. True when the set of watched folders changed.
  bool set(const std::string& key, std::string function, std::vector<std::string> folders);
  bool remove(const std::string& key) { return set(key, {}, {}); }

  std::set<std::string> folders() const;                          // every watched folder
  std::vector<std::string> subscribers(std::string_view folder) const;  // function names, sorted

 private:
  struct entry {
    std::string function;
    std::vector<std::string> folders;
  };
  std::set<std::string> folders_locked() const;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, entry> by_key_;
};

}  // namespace fnmesh::fswatch
