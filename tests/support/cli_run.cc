#include "tests/support/cli_run.h"

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace fnmesh::test {

std::string describe(const cli_run& r) {
  return "exit " + std::to_string(r.exit_code) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string command_line(const std::filesystem::path& program, const std::vector<std::string>& args) {
  std::string cmd = quote(program.string());
  for (const auto& a : args) cmd += " " + quote(a);
  return cmd;
}

cli_run run_shell(const std::string& command, const std::filesystem::path& base, std::chrono::seconds limit) {
  const std::string out = base.string() + ".out", err = base.string() + ".err";
  const std::string cmd = "timeout -s KILL " + std::to_string(limit.count()) + " " + command + " >" +
                          quote(out) + " 2>" + quote(err) + " </dev/null";
  const auto started = std::chrono::steady_clock::now();
  const int status = std::system(cmd.c_str());
  cli_run r;
  r.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace fnmesh::test
