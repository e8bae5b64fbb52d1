// What one file event becomes: which inotify events are reported and as what, the file as
// read (size, sha256, mtime), the payload a function gets and the invocation id that makes
// two adapters publish one invocation.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/errc.h"
#include "tests/support/temp_dir.h"
#include "trigger-adapters/fswatch/file_event.h"

namespace fnmesh::fswatch {
namespace {

using namespace std::chrono_literals;
const event_tracker::clock::time_point t0{};  // the times the tracker is given

TEST(event_tracker, a_created_file_is_reported_once_when_closed_after_writing) {
  event_tracker t;
  EXPECT_EQ(t.on_event(1, "a.csv", IN_CREATE, t0), std::nullopt);
  EXPECT_EQ(t.on_event(1, "a.csv", IN_CLOSE_WRITE, t0), event_kind::created);
  EXPECT_EQ(t.on_event(1, "a.csv", IN_CLOSE_WRITE, t0), event_kind::modified);  // rewritten later
}

TEST(event_tracker, a_file_rewritten_without_create_is_modified_and_moved_in_is_moved_in) {
  event_tracker t;
  EXPECT_EQ(t.on_event(1, "old", IN_CLOSE_WRITE, t0), event_kind::modified);
  EXPECT_EQ(t.on_event(1, "in", IN_MOVED_TO, t0), event_kind::moved_in);
  // Written as a temporary file, then renamed into place: the rename is what is reported.
  EXPECT_EQ(t.on_event(1, "x.tmp", IN_CREATE, t0), std::nullopt);
  EXPECT_EQ(t.on_event(1, "x.tmp", IN_MOVED_FROM, t0), std::nullopt);
  EXPECT_EQ(t.on_event(1, "x", IN_MOVED_TO, t0), event_kind::moved_in);
}

TEST(event_tracker, directories_are_not_reported) {
  event_tracker t;
  EXPECT_EQ(t.on_event(1, "d", IN_CREATE | IN_ISDIR, t0), std::nullopt);
  EXPECT_EQ(t.on_event(1, "d", IN_MOVED_TO | IN_ISDIR, t0), std::nullopt);
}

TEST(event_tracker, creates_are_kept_per_watch_and_forgotten_with_it) {
  event_tracker t;
  t.on_event(1, "a", IN_CREATE, t0);
  EXPECT_EQ(t.on_event(2, "a", IN_CLOSE_WRITE, t0), event_kind::modified);  // another folder
  t.on_event(2, "b", IN_CREATE, t0);
  t.forget(2);
  EXPECT_EQ(t.on_event(2, "b", IN_CLOSE_WRITE, t0), event_kind::modified);
  EXPECT_EQ(t.on_event(1, "a", IN_CLOSE_WRITE, t0), event_kind::created);
  // A created file deleted before it was closed is forgotten.
  t.on_event(1, "gone", IN_CREATE, t0);
  t.on_event(1, "gone", IN_DELETE, t0);
  EXPECT_EQ(t.on_event(1, "gone", IN_CLOSE_WRITE, t0), event_kind::modified);
}

TEST(event_tracker, a_create_never_closed_is_forgotten_after_the_ttl) {
  event_tracker t;
  // A hard link or symlink gets IN_CREATE and no close: not kept for ever.
  t.on_event(1, "link", IN_CREATE, t0);
  t.on_event(1, "slow", IN_CREATE, t0 + 30min);
  t.on_event(1, "other", IN_CLOSE_WRITE, t0 + event_tracker::create_ttl - 1s);
  EXPECT_EQ(t.created(), 2u);
  // Swept at most create_ttl / 6 after it expired.
  const auto later = t0 + event_tracker::create_ttl * 7 / 6 + 1s;
  t.on_event(1, "other", IN_CLOSE_WRITE, later);
  EXPECT_EQ(t.created(), 1u);
  // A later rewrite of the link's target is a modification, not a creation.
  EXPECT_EQ(t.on_event(1, "link", IN_CLOSE_WRITE, later), event_kind::modified);
  EXPECT_EQ(t.on_event(1, "slow", IN_CLOSE_WRITE, later), event_kind::created);
  EXPECT_EQ(t.created(), 0u);
}

TEST(read_file, gives_size_sha256_and_mtime_of_the_content) {
  test::temp_dir dir("fswatch-read");
  const auto path = dir / "abc.txt";
  std::ofstream(path) << "abc";
  timespec times[2] = {{0, UTIME_OMIT}, {1'700'000'000, 123'456'789}};
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);

  auto f = read_file(path, event_kind::created);
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->path, path.string());
  EXPECT_EQ(f->size, 3u);
  EXPECT_EQ(f->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(f->mtime_ns, 1'700'000'000'123'456'789);
}

TEST(read_file, streams_a_file_larger_than_its_buffer) {
  test::temp_dir dir("fswatch-read");
  const auto path = dir / "big";
  std::ofstream(path) << std::string(3u << 20, 'a');  // 3 MiB, read 1 MiB at a time
  auto f = read_file(path, event_kind::modified);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->size, 3u << 20);
  // python3 -c "import hashlib; print(hashlib.sha256(b'a' * (3 << 20)).hexdigest())"
  EXPECT_EQ(f->sha256, "6f850bc94ae6f7de14297c01616c36d712d22864497b28a63b81d776b035e656");
}

TEST(read_file, refuses_what_is_not_a_regular_file) {
  test::temp_dir dir("fswatch-read");
  std::filesystem::create_directory(dir / "d");
  std::filesystem::create_symlink("/etc/hostname", dir / "link");
  ASSERT_EQ(mkfifo((dir / "fifo").c_str(), 0600), 0);  // must not block
  for (const char* name : {"d", "link", "fifo", "missing"}) {
    auto f = read_file(dir / name, event_kind::created);
    ASSERT_FALSE(f) << name;
    EXPECT_EQ(f.error(), errc::not_found) << name << ": " << f.error().message();
  }
}

file_info sample() {
  return {.path = "/data/in/a \"b\".csv",
          .size = 3,
          .sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
          .mtime_ns = 1'700'000'000'123'456'789,
          .event = event_kind::moved_in};
}

TEST(payload_json, carries_path_size_sha256_event_and_mtime) {
  const auto j = nlohmann::json::parse(payload_json(sample()));
  EXPECT_EQ(j["path"], "/data/in/a \"b\".csv");
  EXPECT_EQ(j["size"], 3);
  EXPECT_EQ(j["sha256"], sample().sha256);
  EXPECT_EQ(j["event"], "moved_in");
  EXPECT_EQ(j["mtime"], "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(j.size(), 5u);
}

TEST(invocation_id, is_the_same_for_the_same_event_and_differs_by_function_and_content) {
  const auto a = invocation_id("default", "resize", sample());
  EXPECT_EQ(a.size(), 26u);
  EXPECT_EQ(a, invocation_id("default", "resize", sample()));
  auto moved = sample();
  moved.event = event_kind::created;  // another adapter may have missed the create
  EXPECT_EQ(a, invocation_id("default", "resize", moved));
  EXPECT_NE(a, invocation_id("default", "thumbs", sample()));
  EXPECT_NE(a, invocation_id("acme", "resize", sample()));
  auto rewritten = sample();
  rewritten.mtime_ns += 1'000'000;  // the id's time has millisecond resolution
  EXPECT_NE(a, invocation_id("default", "resize", rewritten));
  auto longer = sample();
  longer.size += 1;
  EXPECT_NE(a, invocation_id("default", "resize", longer));
  auto other = sample();
  other.sha256[0] = '0';
  EXPECT_NE(a, invocation_id("default", "resize", other));
}

}  // namespace
}  // namespace fnmesh::fswatch
