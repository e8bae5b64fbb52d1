#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/errc.h"
#include "node/spool/crc32c.h"
#include "node/spool/spool.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using fnmesh::spool;

namespace {

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::string as_text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

// A fresh directory per test, removed at the end.
class spool_test : public ::testing::Test {
 protected:
  fs::path frames() const { return dir_ / "spool"; }
  fnmesh::test::temp_dir tmp_{"fnmesh-spool"};
  const fs::path dir_ = tmp_.path();
};

std::vector<std::string> texts(const std::vector<fnmesh::spooled>& records) {
  std::vector<std::string> out;
  for (auto& r : records) out.push_back(as_text(r.bytes));
  return out;
}

}  // namespace

TEST(crc32c, matches_the_standard_check_values) {
  EXPECT_EQ(fnmesh::crc32c(as_bytes("123456789")), 0xE3069283u);
  EXPECT_EQ(fnmesh::crc32c(as_bytes("")), 0u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(fnmesh::crc32c(zeros), 0x8A9136AAu);  // RFC 3720 B.4
  // Chained = one pass.
  EXPECT_EQ(fnmesh::crc32c(as_bytes("56789"), fnmesh::crc32c(as_bytes("1234"))), 0xE3069283u);
}

TEST_F(spool_test, append_read_after_and_ack) {
  auto s = spool::open(dir_);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->next_seq(), 1u);
  for (std::string_view r : {"a", "bb", "ccc", "", "eeeee"}) {
    auto seq = s->append(as_bytes(r));
    ASSERT_TRUE(seq);
  }
  EXPECT_EQ(s->last_seq(), 5u);
  EXPECT_EQ(s->pending(), 5u);

  auto all = s->read_after(0, 100);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].seq, 1u);
  EXPECT_EQ((*all)[4].seq, 5u);
  EXPECT_EQ(texts(*all), (std::vector<std::string>{"a", "bb", "ccc", "", "eeeee"}));

  auto page = s->read_after(2, 2);
  ASSERT_TRUE(page);
  EXPECT_EQ(texts(*page), (std::vector<std::string>{"ccc", ""}));
  EXPECT_EQ((*page)[0].seq, 3u);

  ASSERT_TRUE(s->ack(3));
  EXPECT_EQ(s->acked_seq(), 3u);
  EXPECT_EQ(s->pending(), 2u);
  auto rest = s->read_after(0, 100);
  ASSERT_TRUE(rest);
  EXPECT_EQ(texts(*rest), (std::vector<std::string>{"", "eeeee"}));

  // Acking an older seq again is a no-op; acking the future is refused.
  EXPECT_TRUE(s->ack(2));
  EXPECT_EQ(s->acked_seq(), 3u);
  auto future = s->ack(99);
  ASSERT_FALSE(future);
  EXPECT_EQ(future.error(), fnmesh::errc::invalid_argument);
}

TEST_F(spool_test, reopen_keeps_seq_and_unacked_records) {
  {
    auto s = spool::open(dir_);
    ASSERT_TRUE(s);
    for (int i = 1; i <= 10; ++i) ASSERT_TRUE(s->append(as_bytes("r" + std::to_string(i))));
    ASSERT_TRUE(s->ack(4));
  }
  auto s = spool::open(dir_);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->acked_seq(), 4u);
  EXPECT_EQ(s->last_seq(), 10u);
  EXPECT_EQ(s->truncated_at_open(), 0u);
  auto rest = s->read_after(0, 100);
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->size(), 6u);
  EXPECT_EQ((*rest)[0].seq, 5u);
  EXPECT_EQ(as_text((*rest)[0].bytes), "r5");
  auto next = s->append(as_bytes("r11"));
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 11u);
}

TEST_F(spool_test, a_second_process_cannot_open_the_same_spool) {
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  // flock is per open file description: a second open in this process conflicts too.
  auto again = spool::open(dir_);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), fnmesh::errc::unavailable);
}

TEST_F(spool_test, records_survive_a_killed_writer) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = spool::open(dir_);
    if (!s) ::_exit(2);
    for (int i = 0; i < 100; ++i)
      if (!s->append(as_bytes("record " + std::to_string(i)))) ::_exit(3);
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->last_seq(), 100u);
  auto all = s->read_after(0, 1000);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 100u);
  EXPECT_EQ(as_text(all->back().bytes), "record 99");
}

TEST_F(spool_test, a_torn_last_record_is_cut_and_earlier_ones_survive) {
  {
    auto s = spool::open(dir_);
    ASSERT_TRUE(s);
    for (int i = 1; i <= 3; ++i) ASSERT_TRUE(s->append(as_bytes(std::string(40, char('a' + i)))));
  }
  const auto full = fs::file_size(frames());
  fs::resize_file(frames(), full - 5);  // the writer died inside record 3

  auto s = spool::open(dir_);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->last_seq(), 2u);
  EXPECT_GT(s->truncated_at_open(), 0u);
  EXPECT_EQ(fs::file_size(frames()), 2 * (spool::frame_header_bytes + 40));
  auto all = s->read_after(0, 10);
  ASSERT_TRUE(all);
  EXPECT_EQ(texts(*all), (std::vector<std::string>{std::string(40, 'b'), std::string(40, 'c')}));
  // The next record takes the torn one's place and reads back.
  auto seq = s->append(as_bytes("fresh"));
  ASSERT_TRUE(seq);
  EXPECT_EQ(*seq, 3u);
}

TEST_F(spool_test, garbage_after_the_last_record_is_cut) {
  {
    auto s = spool::open(dir_);
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->append(as_bytes("one")));
    ASSERT_TRUE(s->append(as_bytes("two")));
  }
  const auto good = fs::file_size(frames());
  {
    std::ofstream out(frames(), std::ios::binary | std::ios::app);
    // A plausible header (small length) whose crc cannot match, then noise.
    const uint8_t junk[] = {4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 3, 0, 0, 0, 0, 0, 0, 0,
                            'x', 'y', 'z', 'w', 0xff, 0xfe, 0x01};
    out.write(reinterpret_cast<const char*>(junk), sizeof(junk));
  }
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->truncated_at_open(), 23u);
  EXPECT_EQ(fs::file_size(frames()), good);
  auto all = s->read_after(0, 10);
  ASSERT_TRUE(all);
  EXPECT_EQ(texts(*all), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(s->next_seq(), 3u);
}

TEST_F(spool_test, a_corrupt_byte_in_a_middle_record_cuts_from_there) {
  {
    auto s = spool::open(dir_);
    ASSERT_TRUE(s);
    for (std::string_view r : {"first", "second", "third"}) ASSERT_TRUE(s->append(as_bytes(r)));
  }
  {
    std::fstream f(frames(), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(std::streamoff(spool::frame_header_bytes + 5 + spool::frame_header_bytes + 2));
    f.put('X');  // inside "second"
  }
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  auto all = s->read_after(0, 10);
  ASSERT_TRUE(all);
  EXPECT_EQ(texts(*all), (std::vector<std::string>{"first"}));
  EXPECT_EQ(s->last_seq(), 1u);
}

TEST_F(spool_test, everything_acked_truncates_the_file_and_seq_continues) {
  {
    auto s = spool::open(dir_);
    ASSERT_TRUE(s);
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(s->append(as_bytes("payload")));
    EXPECT_GT(s->file_bytes(), 0u);
    ASSERT_TRUE(s->ack(20));
    EXPECT_EQ(s->file_bytes(), 0u);
    EXPECT_EQ(fs::file_size(frames()), 0u);
    EXPECT_EQ(s->pending(), 0u);
  }
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->last_seq(), 20u);
  EXPECT_EQ(s->acked_seq(), 20u);
  auto seq = s->append(as_bytes("after"));
  ASSERT_TRUE(seq);
  EXPECT_EQ(*seq, 21u);
  auto all = s->read_after(0, 10);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().seq, 21u);
}

TEST_F(spool_test, a_large_acked_prefix_is_rewritten_away) {
  const std::string record(100, 'r');
  const uint64_t frame = spool::frame_header_bytes + record.size();
  {
    auto s = spool::open(dir_, /*compact_after_bytes=*/10 * frame);
    ASSERT_TRUE(s);
    for (int i = 0; i < 30; ++i) ASSERT_TRUE(s->append(as_bytes(record + std::to_string(i))));
    ASSERT_TRUE(s->ack(5));  // below the threshold: the file keeps the acked prefix
    EXPECT_EQ(fs::file_size(frames()), 30 * frame + 10 + 20 * 2);
    ASSERT_TRUE(s->ack(12));  // past it: only seq 13..30 remain in the file
    const uint64_t tail = 18 * frame + 18 * 2;
    EXPECT_EQ(s->file_bytes(), tail);
    EXPECT_EQ(fs::file_size(frames()), tail);
    auto rest = s->read_after(0, 100);
    ASSERT_TRUE(rest);
    ASSERT_EQ(rest->size(), 18u);
    EXPECT_EQ(rest->front().seq, 13u);
    EXPECT_EQ(as_text(rest->front().bytes), record + "12");
    ASSERT_TRUE(s->append(as_bytes("new")));
  }
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->last_seq(), 31u);
  auto rest = s->read_after(0, 100);
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->size(), 19u);
  EXPECT_EQ(rest->front().seq, 13u);
  EXPECT_EQ(as_text(rest->back().bytes), "new");
}

TEST_F(spool_test, oversized_records_are_refused) {
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  std::vector<uint8_t> big(spool::max_record_bytes + 1);
  auto r = s->append(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), fnmesh::errc::too_large);
  EXPECT_EQ(s->next_seq(), 1u);
}

TEST_F(spool_test, an_unreadable_acked_file_means_resending_not_losing) {
  {
    auto s = spool::open(dir_);
    ASSERT_TRUE(s);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->append(as_bytes("r")));
    ASSERT_TRUE(s->ack(2));
  }
  std::ofstream(dir_ / "acked", std::ios::trunc) << "not a number";
  auto s = spool::open(dir_);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->acked_seq(), 0u);
  EXPECT_EQ(s->last_seq(), 3u);
  auto all = s->read_after(0, 10);
  ASSERT_TRUE(all);
  // Records 1 and 2 were acked but still in the file: they are sent again (the collector
  // ignores replays) rather than lost.
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(all->front().seq, 1u);
}
