#pragma once
// spool: the node's local, append-only record of Completions not yet acked by the
// billing collector. One file of frames [u32 length][u32 crc32c][u64 seq][bytes]; a
// sidecar file holds the highest acked seq. A torn or corrupt tail (a crash mid-write)
// is cut off at open. Sequence numbers keep rising across restarts. One owner thread.
//
// Files in `dir`: `spool` (the frames; integers little-endian, the crc32c covers the seq
// and the bytes), `acked` (the highest acked seq as decimal text, replaced by write-temp
// + rename) and `lock` (flock'ed: one process per spool).
// Durability: append() is one write() with no fsync, so a record survives a kill of the
// process (the kernel holds it) but not a power cut; the collector ignores replays, so a
// lost ack only means records are sent again, never counted twice.
// Compaction: when everything is acked the file is truncated to zero; when the acked
// prefix passes `compact_after_bytes` the unacked tail is rewritten into a new file
// (write temp + rename), so the file stays small while the collector keeps up.
#include <cstdint>
#include <deque>
#include <filesystem>
#include <span>
#include <utility>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace fnmesh {

struct spooled {
  uint64_t seq;
  std::vector<uint8_t> bytes;
};

class spool {
 public:
  // Largest record append() accepts (errc::too_large beyond it); larger frames found at
  // open are treated as corruption.
  static constexpr size_t max_record_bytes = 64u << 20;
  static constexpr size_t frame_header_bytes = 16;

  // Creates `dir` if needed. Fails with errc::unavailable if another process holds it.
  static result<spool> open(const std::filesystem::path& dir,
                            uint64_t compact_after_bytes = 8u << 20);

  uint64_t next_seq() const noexcept { return last_seq_ + 1; }
  uint64_t last_seq() const noexcept { return last_seq_; }
  uint64_t acked_seq() const noexcept { return acked_seq_; }
  // Records appended and not yet acked.
  size_t pending() const noexcept { return index_.size(); }
  // Bytes in the frame file (acked frames included until compaction).
  uint64_t file_bytes() const noexcept { return end_; }
  // Bytes cut off the tail at open (a torn or corrupt last record); 0 if none.
  uint64_t truncated_at_open() const noexcept { return truncated_at_open_; }

  // Appends one record with seq = next_seq(); durable against a process kill on return.
  result<uint64_t> append(std::span<const uint8_t> bytes);
  // Up to max_records unacked records with seq > after, oldest first.
  result<std::vector<spooled>> read_after(uint64_t after, size_t max_records) const;
  // Everything up to `seq` is safe at the collector; the file is compacted when all is.
  // `seq` beyond last_seq() is errc::invalid_argument; at or below acked_seq() a no-op.
  result<void> ack(uint64_t seq);

 private:
  // One unacked frame in the file: where its bytes start and how many there are.
  struct entry {
    uint64_t seq;
    uint64_t offset;
    uint32_t size;
  };

  spool() = default;
  result<void> scan();
  result<void> write_acked(uint64_t seq);
  result<void> compact();

  std::filesystem::path dir_;
  unique_fd lock_;
  unique_fd file_;
  uint64_t last_seq_ = 0;
  uint64_t acked_seq_ = 0;
  uint64_t end_ = 0;  // end of the last good frame = where the next one is written
  uint64_t acked_bytes_ = 0;  // bytes of acked frames still at the front of the file
  uint64_t compact_after_bytes_ = 0;
  uint64_t truncated_at_open_ = 0;
  std::deque<entry> index_;  // unacked frames, seq ascending
};

}  // namespace fnmesh
