#pragma once
// spool: the node's local, append-only record of Completions not yet acked by the
// billing collector. One file of frames [u32 length][u32 crc32c][u64 seq][bytes]; a
// sidecar file holds the highest acked seq. A torn or corrupt tail (a crash mid-write)
// is cut off at open. Sequence numbers keep rising across restarts. One owner thread.
#include <cstdint>
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
  static result<spool> open(const std::filesystem::path& dir);

  uint64_t next_seq() const noexcept { return last_seq_ + 1; }
  uint64_t last_seq() const noexcept { return last_seq_; }
  uint64_t acked_seq() const noexcept { return acked_seq_; }

  // Appends one record with seq = next_seq(); durable against a process kill on return.
  result<uint64_t> append(std::span<const uint8_t> bytes);
  // Up to max_records unacked records with seq > after, oldest first.
  result<std::vector<spooled>> read_after(uint64_t after, size_t max_records) const;
  // Everything up to `seq` is safe at the collector; the file is compacted when all is.
  result<void> ack(uint64_t seq);

 private:
  // ... implementation state (file, offsets) ...
  std::filesystem::path dir_;
  unique_fd file_;
  uint64_t last_seq_ = 0;
  uint64_t acked_seq_ = 0;
};

}  // namespace fnmesh
