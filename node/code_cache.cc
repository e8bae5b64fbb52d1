#include "node/code_cache.h"

#include "broker/client/code_bundle.h"
#include "common/errc.h"
#include "common/ulid.h"

namespace fnmesh::node {

namespace fs = std::filesystem;

code_cache::code_cache(broker::kv_bucket& code, fs::path dir) : code_(code), dir_(std::move(dir)) {
  fs::create_directories(dir_);
}

result<fs::path> code_cache::ensure(const std::string& digest) {
  if (digest.empty() || digest.find_first_not_of("0123456789abcdef") != std::string::npos)
    return fail(errc::invalid_argument);
  const fs::path ready = dir_ / digest;
  std::lock_guard lock(mutex_);
  if (ready_.contains(digest)) return ready;
  std::error_code ec;
  if (fs::exists(ready / ".complete", ec)) {
    ready_.insert(digest);
    return ready;
  }
  auto bundle = broker::load_bundle(code_, digest);
  if (!bundle) return fail(bundle.error());
  const fs::path staging = dir_ / (".staging-" + new_ulid());
  if (auto ok = broker::unpack_bundle(*bundle, staging); !ok) {
    fs::remove_all(staging, ec);
    return fail(ok.error());
  }
  if (FILE* marker = std::fopen((staging / ".complete").c_str(), "w")) std::fclose(marker);
  fs::remove_all(ready, ec);
  fs::rename(staging, ready, ec);
  if (ec) return fail(ec);
  ready_.insert(digest);
  return ready;
}

}  // namespace fnmesh::node
