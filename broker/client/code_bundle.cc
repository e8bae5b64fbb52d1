#include "broker/client/code_bundle.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <iterator>

#include "common/errc.h"
#include "common/log.h"
#include "flatbuffers/proto.h"

namespace fnmesh::broker {
namespace fs = std::filesystem;
namespace {

auto log() { return fnmesh::logger("broker"); }

result<std::vector<uint8_t>> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return fail_errno(errno ? errno : EIO);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return fail_errno(EIO);
  return bytes;
}

// A bundle path is safe when it is relative, '/'-separated, and has no '.', '..' or
// empty component.
bool safe_relative(std::string_view p) noexcept {
  if (p.empty() || p.front() == '/' || p.size() > 4096) return false;
  size_t pos = 0;
  while (pos <= p.size()) {
    size_t slash = p.find('/', pos);
    std::string_view part = p.substr(pos, slash == p.npos ? p.npos : slash - pos);
    if (part.empty() || part == "." || part == ".." || part.find('\0') != part.npos)
      return false;
    if (slash == p.npos) break;
    pos = slash + 1;
  }
  return true;
}

result<void> write_file(const fs::path& path, std::span<const uint8_t> content, uint32_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                  mode & 0777);
  if (fd < 0) return fail_errno(errno);
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return fail_errno(e);
    }
    off += size_t(n);
  }
  ::fchmod(fd, mode & 0777);
  if (::close(fd) != 0) return fail_errno(errno);
  return {};
}

}  // namespace

std::string sha256_hex(std::span<const uint8_t> bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

result<packed_bundle> pack_folder(const fs::path& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return fail(ec ? ec : make_error_code(errc::not_found));

  struct entry {
    std::string rel;
    fs::path path;
    uint32_t mode;
  };
  std::vector<entry> files;
  fs::recursive_directory_iterator it(folder, ec), end;
  if (ec) return fail(ec);
  for (; it != end; it.increment(ec)) {
    if (ec) return fail(ec);
    const auto name = it->path().filename();
    auto st = it->symlink_status(ec);
    if (ec) return fail(ec);
    if (fs::is_directory(st)) {
      if (name == ".git" || name == "__pycache__") it.disable_recursion_pending();
      continue;
    }
    if (!fs::is_regular_file(st)) {
      log()->debug("bundle: skipping {} (not a regular file)", it->path().string());
      continue;
    }
    files.push_back({fs::relative(it->path(), folder).generic_string(), it->path(),
                     uint32_t(st.permissions() & fs::perms::mask)});
  }
  std::sort(files.begin(), files.end(),
            [](const entry& a, const entry& b) { return a.rel < b.rel; });

  flatbuffers::FlatBufferBuilder b(64 << 10);
  std::vector<flatbuffers::Offset<proto::BundleFile>> offsets;
  offsets.reserve(files.size());
  for (const auto& f : files) {
    auto content = read_file(f.path);
    if (!content) return fail(content.error());
    auto path = b.CreateString(f.rel);
    auto data = b.CreateVector(*content);
    offsets.push_back(proto::CreateBundleFile(b, path, f.mode, data));
  }
  b.Finish(proto::CreateCodeBundle(b, b.CreateVector(offsets)));

  packed_bundle out;
  out.buffer.assign(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  out.digest = sha256_hex(out.buffer);
  return out;
}

result<void> unpack_bundle(std::span<const uint8_t> bundle, const fs::path& dir) {
  const auto* root = proto::verified<proto::CodeBundle>(bundle);
  if (!root) return fail(errc::malformed);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail(ec);
  if (!root->files()) return {};
  for (const auto* f : *root->files()) {
    std::string_view rel = proto::view(f->path());
    if (!safe_relative(rel)) {
      log()->warn("bundle: refusing path '{}' (escapes the bundle folder)", rel);
      return fail(errc::invalid_argument);
    }
    fs::path target = dir / fs::path(rel);
    fs::create_directories(target.parent_path(), ec);
    if (ec) return fail(ec);
    // Sandboxes run as an unprivileged user: every file readable, executables runnable,
    // nothing writable but by the node.
    if (auto w = write_file(target, proto::bytes(f->content()), (f->mode() & 0111) ? 0755 : 0644); !w)
      return w;
  }
  return {};
}

result<void> store_bundle(kv_bucket& code, const packed_bundle& bundle) {
  auto existing = code.get(bundle.digest);
  if (!existing) return fail(existing.error());
  if (*existing) return {};  // content-addressed: already stored
  const size_t n = bundle.buffer.empty() ? 0 : (bundle.buffer.size() + chunk_bytes - 1) / chunk_bytes;
  for (size_t i = 0; i < n; ++i) {
    size_t off = i * chunk_bytes;
    size_t len = std::min(chunk_bytes, bundle.buffer.size() - off);
    auto put = code.put(bundle.digest + "." + std::to_string(i),
                        std::span<const uint8_t>(bundle.buffer.data() + off, len));
    if (!put) return put;
  }
  // The count goes last: a reader that finds it finds every chunk.
  std::string count = std::to_string(n);
  return code.put(bundle.digest,
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(count.data()),
                                           count.size()));
}

result<std::vector<uint8_t>> load_bundle(kv_bucket& code, const std::string& digest) {
  auto head = code.get(digest);
  if (!head) return fail(head.error());
  if (!*head) return fail(errc::not_found);
  std::string_view text = proto::text(**head);
  size_t n = 0;
  auto [ptr, perr] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (perr != std::errc() || ptr != text.data() + text.size()) return fail(errc::malformed);
  std::vector<uint8_t> out;
  for (size_t i = 0; i < n; ++i) {
    auto chunk = code.get(digest + "." + std::to_string(i));
    if (!chunk) return fail(chunk.error());
    if (!*chunk) return fail(errc::not_found);
    out.insert(out.end(), (*chunk)->begin(), (*chunk)->end());
  }
  if (sha256_hex(out) != digest) {
    log()->warn("bundle {}: stored content does not match its digest", digest);
    return fail(errc::malformed);
  }
  return out;
}

}  // namespace fnmesh::broker
