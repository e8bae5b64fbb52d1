#include "tests/support/temp_dir.h"

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <system_error>

namespace fnmesh::test {

temp_dir::temp_dir(std::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = (std::filesystem::path(base && *base ? base : "/tmp") /
                      (std::string(prefix) + "-XXXXXX"))
                         .string();
  if (!::mkdtemp(tmpl.data()))
    throw std::system_error(errno, std::system_category(), "mkdtemp " + tmpl);
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  const char* keep = std::getenv("FNMESH_KEEP_TEMP");
  if (keep && std::string_view(keep) == "1") return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace fnmesh::test
