#include "node/spool/spool.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <string>

#include "common/errc.h"
#include "common/log.h"
#include "node/spool/crc32c.h"

namespace fnmesh {
namespace {

constexpr const char* frames_name = "spool";
constexpr const char* acked_name = "acked";
constexpr const char* lock_name = "lock";

void put_u32(uint8_t* p, uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put_u64(uint8_t* p, uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) noexcept {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(p[i]) << (8 * i);
  return v;
}
uint64_t get_u64(const uint8_t* p) noexcept {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

uint32_t frame_crc(const uint8_t* seq_le, std::span<const uint8_t> bytes) noexcept {
  return crc32c(bytes, crc32c(std::span<const uint8_t>(seq_le, 8)));
}

// Reads exactly `n` bytes at `offset`; errc::malformed on a short read (end of file).
result<void> pread_all(int fd, uint8_t* out, size_t n, uint64_t offset) {
  while (n > 0) {
    ssize_t got = ::pread(fd, out, n, off_t(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail_errno(errno);
    }
    if (got == 0) return fail(errc::malformed);
    out += got;
    n -= size_t(got);
    offset += uint64_t(got);
  }
  return {};
}

result<void> write_all(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t put = ::write(fd, data, n);
    if (put < 0) {
      if (errno == EINTR) continue;
      return fail_errno(errno);
    }
    data += put;
    n -= size_t(put);
  }
  return {};
}

result<unique_fd> open_file(const std::filesystem::path& p, int flags) {
  int fd = ::open(p.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return fail_errno(errno);
  return unique_fd(fd);
}

}  // namespace

result<spool> spool::open(const std::filesystem::path& dir, uint64_t compact_after_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail(ec);

  spool s;
  s.dir_ = dir;
  s.compact_after_bytes_ = compact_after_bytes;

  auto lock = open_file(dir / lock_name, O_RDWR | O_CREAT);
  if (!lock) return fail(lock.error());
  if (::flock(lock->get(), LOCK_EX | LOCK_NB) != 0)
    return errno == EWOULDBLOCK ? fail(errc::unavailable) : fail_errno(errno);
  s.lock_ = std::move(*lock);

  auto acked = open_file(dir / acked_name, O_RDONLY);
  if (acked) {
    std::array<char, 32> text{};
    ssize_t got = ::read(acked->get(), text.data(), text.size() - 1);
    uint64_t v = 0;
    auto parsed = std::from_chars(text.data(), text.data() + std::max<ssize_t>(got, 0), v);
    if (got > 0 && parsed.ec == std::errc{}) {
      s.acked_seq_ = v;
    } else {
      // Only a lost ack: the records are sent again and the collector ignores replays.
      logger("spool")->warn("{}: unreadable acked file, resending everything in the spool",
                            dir.string());
    }
  } else if (acked.error() != std::errc::no_such_file_or_directory) {
    return fail(acked.error());
  }

  auto file = open_file(dir / frames_name, O_RDWR | O_CREAT);
  if (!file) return fail(file.error());
  s.file_ = std::move(*file);
  if (auto scanned = s.scan(); !scanned) return fail(scanned.error());
  s.last_seq_ = std::max(s.last_seq_, s.acked_seq_);
  if (s.index_.empty() && s.end_ > 0) {
    if (::ftruncate(s.file_.get(), 0) != 0) return fail_errno(errno);
    s.end_ = 0;
    s.acked_bytes_ = 0;
  }
  return s;
}

result<void> spool::scan() {
  struct stat st{};
  if (::fstat(file_.get(), &st) != 0) return fail_errno(errno);
  const uint64_t size = uint64_t(st.st_size);
  uint64_t offset = 0;
  uint64_t prev_seq = 0;
  std::array<uint8_t, frame_header_bytes> header{};
  std::vector<uint8_t> payload;
  while (size - offset >= frame_header_bytes) {
    if (!pread_all(file_.get(), header.data(), header.size(), offset)) break;
    const uint32_t len = get_u32(header.data());
    const uint32_t crc = get_u32(header.data() + 4);
    const uint64_t seq = get_u64(header.data() + 8);
    if (len > max_record_bytes || size - offset - frame_header_bytes < len) break;
    if (seq <= prev_seq) break;
    payload.resize(len);
    if (!pread_all(file_.get(), payload.data(), len, offset + frame_header_bytes)) break;
    if (frame_crc(header.data() + 8, payload) != crc) break;
    if (seq > acked_seq_)
      index_.push_back({seq, offset + frame_header_bytes, len});
    else
      acked_bytes_ += frame_header_bytes + len;
    last_seq_ = prev_seq = seq;
    offset += frame_header_bytes + len;
  }
  if (offset < size) {
    truncated_at_open_ = size - offset;
    logger("spool")->warn("{}: cut {} bytes of torn or corrupt tail after seq {}",
                          dir_.string(), truncated_at_open_, last_seq_);
    if (::ftruncate(file_.get(), off_t(offset)) != 0) return fail_errno(errno);
  }
  end_ = offset;
  return {};
}

result<uint64_t> spool::append(std::span<const uint8_t> bytes) {
  if (bytes.size() > max_record_bytes) return fail(errc::too_large);
  const uint64_t seq = last_seq_ + 1;
  std::array<uint8_t, frame_header_bytes> header{};
  put_u32(header.data(), uint32_t(bytes.size()));
  put_u64(header.data() + 8, seq);
  put_u32(header.data() + 4, frame_crc(header.data() + 8, bytes));

  // One pwritev: header and bytes reach the page cache together; a partial write (disk
  // full) is cut back so the file never holds a torn frame while this process lives.
  const size_t total = header.size() + bytes.size();
  size_t done = 0;
  while (done < total) {
    std::array<iovec, 2> parts{};
    int n = 0;
    if (done < header.size()) parts[n++] = {header.data() + done, header.size() - done};
    const size_t body_done = done > header.size() ? done - header.size() : 0;
    parts[n++] = {const_cast<uint8_t*>(bytes.data()) + body_done, bytes.size() - body_done};
    ssize_t put = ::pwritev(file_.get(), parts.data(), n, off_t(end_ + done));
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) {
      const int e = put < 0 ? errno : EIO;
      (void)::ftruncate(file_.get(), off_t(end_));
      return fail_errno(e);
    }
    done += size_t(put);
  }
  index_.push_back({seq, end_ + frame_header_bytes, uint32_t(bytes.size())});
  end_ += total;
  last_seq_ = seq;
  return seq;
}

result<std::vector<spooled>> spool::read_after(uint64_t after, size_t max_records) const {
  const uint64_t from = std::max(after, acked_seq_);
  auto it = std::upper_bound(index_.begin(), index_.end(), from,
                             [](uint64_t s, const entry& e) { return s < e.seq; });
  std::vector<spooled> out;
  for (; it != index_.end() && out.size() < max_records; ++it) {
    spooled r{it->seq, std::vector<uint8_t>(it->size)};
    if (auto read = pread_all(file_.get(), r.bytes.data(), it->size, it->offset); !read)
      return fail(read.error());
    out.push_back(std::move(r));
  }
  return out;
}

result<void> spool::ack(uint64_t seq) {
  if (seq > last_seq_) return fail(errc::invalid_argument);
  if (seq <= acked_seq_) return {};
  if (auto written = write_acked(seq); !written) return written;
  acked_seq_ = seq;
  while (!index_.empty() && index_.front().seq <= seq) {
    acked_bytes_ += frame_header_bytes + index_.front().size;
    index_.pop_front();
  }
  if (index_.empty()) {
    if (::ftruncate(file_.get(), 0) != 0) return fail_errno(errno);
    end_ = 0;
    acked_bytes_ = 0;
  } else if (acked_bytes_ >= compact_after_bytes_) {
    // The ack itself is recorded; a failed rewrite only leaves the file longer.
    if (auto c = compact(); !c)
      logger("spool")->warn("{}: compaction failed: {}", dir_.string(), c.error().message());
  }
  return {};
}

result<void> spool::write_acked(uint64_t seq) {
  const auto tmp = dir_ / (std::string(acked_name) + ".tmp");
  auto fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
  if (!fd) return fail(fd.error());
  const std::string text = std::to_string(seq) + "\n";
  if (auto w = write_all(fd->get(), reinterpret_cast<const uint8_t*>(text.data()), text.size());
      !w)
    return w;
  fd->reset();
  if (::rename(tmp.c_str(), (dir_ / acked_name).c_str()) != 0) return fail_errno(errno);
  return {};
}

result<void> spool::compact() {
  const uint64_t start = index_.front().offset - frame_header_bytes;
  const auto tmp = dir_ / (std::string(frames_name) + ".tmp");
  auto out = open_file(tmp, O_RDWR | O_CREAT | O_TRUNC);
  if (!out) return fail(out.error());
  std::vector<uint8_t> chunk(1u << 20);
  for (uint64_t at = start; at < end_;) {
    const size_t n = size_t(std::min<uint64_t>(chunk.size(), end_ - at));
    auto copied = pread_all(file_.get(), chunk.data(), n, at);
    if (copied) copied = write_all(out->get(), chunk.data(), n);
    if (!copied) {
      ::unlink(tmp.c_str());
      return copied;
    }
    at += n;
  }
  if (::rename(tmp.c_str(), (dir_ / frames_name).c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return fail_errno(e);
  }
  file_ = std::move(*out);
  for (auto& e : index_) e.offset -= start;
  end_ -= start;
  acked_bytes_ = 0;
  return {};
}

}  // namespace fnmesh
