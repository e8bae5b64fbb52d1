#include "broker/client/code_bundle.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/errc.h"
#include "flatbuffers/proto.h"
#include "tests/support/temp_dir.h"

namespace fnmesh::broker {
namespace {
namespace fs = std::filesystem;

using scratch = fnmesh::test::temp_dir;

void write(const fs::path& p, const std::string& text, fs::perms mode = fs::perms(0644)) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
  fs::permissions(p, mode);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(sha256_hex, known_vector) {
  const std::string abc = "abc";
  EXPECT_EQ(sha256_hex({reinterpret_cast<const uint8_t*>(abc.data()), abc.size()}),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(code_bundle, round_trip_keeps_files_makes_them_readable_and_skips_caches) {
  scratch src, dst;
  write(src.path() / "handler.py", "def handle(event, ctx):\n    return event\n");
  write(src.path() / "bin/run", "#!/bin/sh\necho hi\n", fs::perms(0700));
  write(src.path() / "secret.cfg", "key=1\n", fs::perms(0600));
  write(src.path() / "data/nested/deep.bin", std::string("\0\1\2\3", 4));
  write(src.path() / "__pycache__/handler.cpython-311.pyc", "junk");
  write(src.path() / ".git/HEAD", "ref: refs/heads/main\n");

  auto packed = pack_folder(src.path());
  ASSERT_TRUE(packed) << packed.error().message();
  EXPECT_EQ(packed->digest, sha256_hex(packed->buffer));
  const auto* bundle = proto::verified<proto::CodeBundle>(packed->buffer);
  ASSERT_NE(bundle, nullptr);
  ASSERT_EQ(bundle->files()->size(), 4u);
  EXPECT_EQ(proto::view(bundle->files()->Get(0)->path()), "bin/run");  // sorted

  auto unpacked = unpack_bundle(packed->buffer, dst.path() / "task");
  ASSERT_TRUE(unpacked) << unpacked.error().message();
  EXPECT_EQ(slurp(dst.path() / "task/handler.py"), slurp(src.path() / "handler.py"));
  EXPECT_EQ(slurp(dst.path() / "task/data/nested/deep.bin"), std::string("\0\1\2\3", 4));
  struct stat st {};
  ASSERT_EQ(::stat((dst.path() / "task/bin/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);  // the sandbox's user may run it
  ASSERT_EQ(::stat((dst.path() / "task/secret.cfg").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);  // and read it
  EXPECT_FALSE(fs::exists(dst.path() / "task/__pycache__"));
  EXPECT_FALSE(fs::exists(dst.path() / "task/.git"));
}

TEST(code_bundle, digest_is_deterministic_and_content_sensitive) {
  scratch a, b;
  // Same content created in a different order.
  write(a.path() / "x.txt", "one");
  write(a.path() / "y/z.txt", "two");
  write(b.path() / "y/z.txt", "two");
  write(b.path() / "x.txt", "one");
  auto pa = pack_folder(a.path()), pb = pack_folder(b.path());
  ASSERT_TRUE(pa && pb);
  EXPECT_EQ(pa->digest, pb->digest);
  EXPECT_EQ(pa->buffer, pb->buffer);

  write(b.path() / "x.txt", "one!");
  auto pc = pack_folder(b.path());
  ASSERT_TRUE(pc);
  EXPECT_NE(pa->digest, pc->digest);
}

std::vector<uint8_t> bundle_with_path(const std::string& path) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<uint8_t> content{'x'};
  auto f = proto::CreateBundleFile(b, b.CreateString(path), 0644, b.CreateVector(content));
  std::vector<flatbuffers::Offset<proto::BundleFile>> files{f};
  b.Finish(proto::CreateCodeBundle(b, b.CreateVector(files)));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

TEST(code_bundle, refuses_paths_that_escape) {
  scratch dst;
  for (std::string bad : {"../evil", "a/../../evil", "/etc/evil", "a//b", "./a", ""}) {
    auto r = unpack_bundle(bundle_with_path(bad), dst.path() / "task");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error(), make_error_code(errc::invalid_argument)) << bad;
  }
  EXPECT_FALSE(fs::exists(dst.path() / "evil"));
  EXPECT_TRUE(unpack_bundle(bundle_with_path("ok/file"), dst.path() / "task"));
  EXPECT_TRUE(fs::exists(dst.path() / "task/ok/file"));
}

TEST(code_bundle, refuses_garbage) {
  scratch dst;
  std::vector<uint8_t> junk{1, 2, 3, 4, 5, 6, 7, 8};
  auto r = unpack_bundle(junk, dst.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(errc::malformed));
}

}  // namespace
}  // namespace fnmesh::broker
