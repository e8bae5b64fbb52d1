#include "trigger-adapters/fswatch/file_event.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <array>
#include <ctime>
#include <memory>
#include <vector>

#include "broker/client/event_id.h"
#include "broker/client/subjects.h"
#include "common/errc.h"
#include "common/unique_fd.h"

namespace fnmesh::fswatch {
namespace {

struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};

std::string rfc3339(int64_t unix_ns) {
  const time_t secs = time_t(unix_ns / 1'000'000'000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &utc);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%09lldZ", date, (long long)(unix_ns % 1'000'000'000));
  return out;
}

}  // namespace

const char* name(event_kind k) noexcept {
  switch (k) {
    case event_kind::created: return "created";
    case event_kind::modified: return "modified";
    case event_kind::moved_in: return "moved_in";
  }
  return "?";
}

std::optional<event_kind> event_tracker::on_event(int wd, std::string_view file, uint32_t mask,
                                                  clock::time_point now) {
  if (mask & IN_ISDIR) return std::nullopt;
  expire(now);
  auto& created = created_[wd];
  auto it = created.find(file);
  const bool seen_create = it != created.end();
  if (mask & IN_CREATE) {
    if (!seen_create) created.emplace(file, now);
    return std::nullopt;
  }
  if (seen_create) created.erase(it);
  if (mask & IN_CLOSE_WRITE) return seen_create ? event_kind::created : event_kind::modified;
  if (mask & IN_MOVED_TO) return event_kind::moved_in;
  return std::nullopt;  // IN_DELETE, IN_MOVED_FROM: a created file that will not be closed
}

// One sweep every create_ttl / 6: a name lives between create_ttl and 7/6 of it.
void event_tracker::expire(clock::time_point now) {
  if (now < next_expiry_) return;
  next_expiry_ = now + create_ttl / 6;
  for (auto& [wd, created] : created_)
    std::erase_if(created, [&](const auto& entry) { return now - entry.second >= create_ttl; });
}

void event_tracker::forget(int wd) { created_.erase(wd); }

size_t event_tracker::created() const noexcept {
  size_t n = 0;
  for (const auto& [wd, created] : created_) n += created.size();
  return n;
}

result<file_info> read_file(const std::filesystem::path& path, event_kind event) {
  // O_NONBLOCK: a FIFO moved in must not block the open; O_NOFOLLOW: links are not files.
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) return fail(errno == ENOENT || errno == ELOOP ? make_error_code(errc::not_found)
                                                        : std::error_code(errno, std::system_category()));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return fail(std::error_code(errno, std::system_category()));
  if (!S_ISREG(st.st_mode)) return fail(errc::not_found);

  std::unique_ptr<EVP_MD_CTX, md_ctx_deleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return fail(std::make_error_code(std::errc::not_enough_memory));
  std::vector<uint8_t> buf(1 << 20);
  uint64_t size = 0;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(std::error_code(errno, std::system_category()));
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), size_t(n));
    size += uint64_t(n);
  }
  std::array<uint8_t, EVP_MAX_MD_SIZE> md{};
  unsigned md_len = 0;
  EVP_DigestFinal_ex(ctx.get(), md.data(), &md_len);
  static constexpr char hex[] = "0123456789abcdef";
  std::string digest;
  for (unsigned i = 0; i < md_len; ++i) {
    digest += hex[md[i] >> 4];
    digest += hex[md[i] & 15];
  }
  return file_info{.path = path.string(),
                   .size = size,
                   .sha256 = std::move(digest),
                   .mtime_ns = int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
                   .event = event};
}

std::string payload_json(const file_info& f) {
  nlohmann::ordered_json j;
  j["path"] = f.path;
  j["size"] = f.size;
  j["sha256"] = f.sha256;
  j["event"] = name(f.event);
  j["mtime"] = rfc3339(f.mtime_ns);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // any path bytes
}

std::string invocation_id(std::string_view tenant, std::string_view function,
                          const file_info& f) {
  std::string key = broker::function_key(tenant, function);
  key += '\n';
  key += f.path;
  key += '\n';
  key += f.sha256;
  return broker::event_invocation_id(f.mtime_ns, f.size, key);
}

}  // namespace fnmesh::fswatch
