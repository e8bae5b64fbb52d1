// `fnmesh-node --check`: what the machine supports, as a user runs it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "tests/support/cli_run.h"
#include "tests/support/mesh.h"
#include "tests/support/temp_dir.h"

namespace fnmesh::node {
namespace {

// Each "item    text" line of the report, by item.
std::map<std::string, std::string> items_of(const std::string& out) {
  std::map<std::string, std::string> items;
  for (const auto& line : test::lines_of(out)) {
    auto gap = line.find("  ");
    if (gap == std::string::npos) continue;
    items[line.substr(0, gap)] = line.substr(line.find_first_not_of(' ', gap));
  }
  return items;
}

TEST(check, reports_what_this_machine_supports) {
  test::temp_dir dir;
  auto r = test::run_shell(test::command_line(test::bin("fnmesh-node"), {"--check"}), dir.path() / "check");
  auto items = items_of(r.out);
  for (const char* item : {"kernel", "root", "BTF", "CAP_BPF", "BPF meter", "cgroups", "seccomp", "user namespaces",
                           "sandboxes"})
    EXPECT_TRUE(items.contains(item)) << item << " missing:\n" << test::describe(r);
  // What the node's own start-up needs is what --check says: root and the kernel's
  // sandbox features (every machine we run on has them).
  const bool root = ::geteuid() == 0;
  EXPECT_EQ(r.exit_code, root ? 0 : 1) << test::describe(r);
  EXPECT_EQ(items["sandboxes"], root ? "yes" : "no");
  EXPECT_TRUE(items["seccomp"].starts_with("yes")) << items["seccomp"];
  EXPECT_TRUE(items["user namespaces"].starts_with("yes")) << items["user namespaces"];
  EXPECT_NE(items["cgroups"].find("/sys/fs/cgroup"), std::string::npos) << items["cgroups"];
  EXPECT_EQ(items["BTF"].starts_with("yes"), std::filesystem::exists("/sys/kernel/btf/vmlinux"));
#ifdef FNMESH_HAVE_BPF
  if (root && items["BTF"].starts_with("yes")) {
    EXPECT_TRUE(items["BPF meter"].starts_with("loads")) << items["BPF meter"];
  }
#endif
}

}  // namespace
}  // namespace fnmesh::node
