#pragma once
// Running the fnmesh CLI as a shell does: the command line quoted, stdout and stderr kept
// apart in files, the exit code as a shell reports it. Stateless; any thread.
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace fnmesh::test {

struct cli_run {
  int exit_code = -1;
  std::string out;
  std::string err;
  std::chrono::milliseconds took{};
};

// "exit N", then stdout and stderr: what a failed assertion prints.
std::string describe(const cli_run& r);

// `s` single-quoted for /bin/sh.
std::string quote(const std::string& s);
// `program` and `args`, each quoted, as one command line.
std::string command_line(const std::filesystem::path& program, const std::vector<std::string>& args);

// Runs the shell `command` with no stdin, its stdout in `<base>.out` and stderr in
// `<base>.err`; SIGKILLed after `limit`.
cli_run run_shell(const std::string& command, const std::filesystem::path& base,
                  std::chrono::seconds limit = std::chrono::seconds(60));

// The whole file; empty when it cannot be read.
std::string slurp(const std::filesystem::path& path);
std::vector<std::string> lines_of(const std::string& text);

}  // namespace fnmesh::test
