#include "node/check.h"

#include <linux/capability.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "node/bpf/cpu_meter.h"
#include "node/sandbox/cgroups.h"

namespace fnmesh::node {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The effective capability set of this process, from /proc/self/status.
uint64_t effective_capabilities() {
  std::istringstream status(slurp("/proc/self/status"));
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("CapEff:")) return std::stoull(line.substr(7), nullptr, 16);
  return 0;
}

std::string cgroups_text(const cgroup_layout& l) {
  std::string t;
  if (!l.v2_dir.empty()) {
    const auto controllers = trimmed(slurp(l.v2_dir + "/cgroup.controllers"));
    t = "v2 at " + l.v2_dir + " (controllers: " + (controllers.empty() ? "none" : controllers) + ")";
  }
  for (const auto& h : l.v1) {
    std::string names;
    for (auto [on, name] : {std::pair{h.memory, "memory"}, {h.cpu, "cpu"}, {h.pids, "pids"}, {h.cpuacct, "cpuacct"}})
      if (on) names += std::string(names.empty() ? "" : ",") + name;
    t += std::string(t.empty() ? "" : "; ") + "v1 " + names + " at " + h.dir;
  }
  return t.empty() ? "none found" : t;
}

}  // namespace

machine_check check_machine() {
  machine_check c;
  auto line = [&](const char* what, const std::string& text) {
    c.text += std::string(what) + std::string(18 - std::min<size_t>(17, std::string(what).size()), ' ') + text + "\n";
  };
  utsname u{};
  ::uname(&u);
  line("kernel", std::string(u.release) + " (" + u.machine + ")");
  const bool root = ::geteuid() == 0;
  line("root", root ? "yes" : "no: the node makes namespaces and cgroups, run it as root");

  const bool btf = std::filesystem::exists("/sys/kernel/btf/vmlinux");
  line("BTF", btf ? "yes (/sys/kernel/btf/vmlinux)" : "no: the BPF meters need a kernel with BTF");
  const uint64_t caps = effective_capabilities();
  const bool cap_bpf = (caps >> CAP_BPF & 1) && (caps >> CAP_PERFMON & 1);
  line("CAP_BPF", cap_bpf ? "yes (and CAP_PERFMON)" : "no");
  auto meter = cpu_meter::open({});
  line("BPF meter", meter ? "loads: CPU per sandbox counted in the kernel, budgets enforced there"
                          : "does not load (" + meter.error().message() + "): CPU from cgroups");

  const auto layout = parse_cgroup_layout(slurp("/proc/self/mountinfo"), slurp("/proc/self/cgroup"));
  line("cgroups", cgroups_text(layout));
  const bool cgroups = !layout.v2_dir.empty() || !layout.v1.empty();

  const auto actions = trimmed(slurp("/proc/sys/kernel/seccomp/actions_avail"));
  const bool seccomp = actions.find("errno") != std::string::npos;
  line("seccomp", seccomp ? "yes (filters: " + actions + ")" : "no");

  const auto max_userns = trimmed(slurp("/proc/sys/user/max_user_namespaces"));
  const bool userns = !max_userns.empty() && max_userns != "0";
  line("user namespaces", userns ? "yes (at most " + max_userns + ")" : "no");

  c.can_run = root && cgroups && seccomp && userns;
  line("sandboxes", c.can_run ? "yes" : "no");
  return c;
}

}  // namespace fnmesh::node
