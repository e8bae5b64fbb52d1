#pragma once
// temp_dir: a fresh directory under $TMPDIR (or /tmp), removed with everything in it on
// destruction unless FNMESH_KEEP_TEMP=1. Owns the directory; not shared between threads.
#include <filesystem>
#include <string_view>

namespace fnmesh::test {

class temp_dir {
 public:
  explicit temp_dir(std::string_view prefix = "fnmesh-test");  // throws on failure
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace fnmesh::test
