// nodejs runtime: the real shim.js under /usr/bin/node, driven over a socketpair at fd 3
// as the executor drives it, with Invocations built and Results verified by the C++ code.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "flatbuffers/proto.h"
#include "tests/support/temp_dir.h"

extern char** environ;

namespace fnmesh {
namespace {

using namespace std::chrono_literals;

const std::filesystem::path node_binary = "/usr/bin/node";

std::filesystem::path source_dir() {
  const char* v = std::getenv("FNMESH_SOURCE_DIR");
  return v && *v ? std::filesystem::path(v) : std::filesystem::path(FNMESH_TEST_SOURCE_DIR);
}

int64_t unix_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Moved to a descriptor >= 10, so that the child's dup2 onto 0..3 never clobbers a source.
unique_fd high(int fd) {
  unique_fd moved(::fcntl(fd, F_DUPFD_CLOEXEC, 10));
  ::close(fd);
  return moved;
}

struct invocation_fields {
  std::string id = "inv-1";
  std::string function = "fn";
  std::string payload;
  std::string content_type = "application/json";
  proto::Trigger trigger = proto::Trigger::cli;
  std::string source;
  int64_t deadline_ns = 0;
  uint32_t attempt = 1;
};

std::vector<uint8_t> invocation(const invocation_fields& f) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<uint8_t> payload(f.payload.begin(), f.payload.end());
  b.Finish(proto::CreateInvocationDirect(b, f.id.c_str(), "test", f.function.c_str(), "v1", &payload,
                                         f.content_type.c_str(), f.trigger, f.source.c_str(), f.deadline_ns, 0,
                                         f.attempt));
  auto bytes = proto::bytes(b);
  return {bytes.begin(), bytes.end()};
}

// A Result as the node reads it (after verification).
struct result {
  proto::Status status = proto::Status::error;
  std::string invocation_id, output, error, content_type;
};

// One `node shim.js <handler>` process: fd 3 is our socketpair, stdout and stderr are our
// pipes, cwd the code folder. The destructor kills and reaps it. One thread.
class runtime_process {
 public:
  runtime_process(const std::filesystem::path& cwd, const std::string& handler,
                  std::vector<std::string> extra_env = {}) {
    int sp[2], out[2], err[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string("runtime_process: ") + std::strerror(errno));
    sock_ = high(sp[0]);
    out_ = high(out[0]);
    err_ = high(err[0]);
    unique_fd child_sock = high(sp[1]), child_out = high(out[1]), child_err = high(err[1]);
    ::fcntl(out_.get(), F_SETFL, O_NONBLOCK);
    ::fcntl(err_.get(), F_SETFL, O_NONBLOCK);

    std::vector<std::string> args = {node_binary.string(), (source_dir() / "node/runtimes/nodejs/shim.js").string(),
                                     handler};
    for (char** e = environ; *e; ++e) extra_env.emplace_back(*e);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    for (auto& e : extra_env) envp.push_back(e.data());
    argv.push_back(nullptr);
    envp.push_back(nullptr);

    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int null = ::open("/dev/null", O_RDONLY);
      if (::dup2(null, 0) < 0 || ::dup2(child_out.get(), 1) < 0 || ::dup2(child_err.get(), 2) < 0 ||
          ::dup2(child_sock.get(), 3) < 0 || ::chdir(cwd.c_str()) != 0)
        ::_exit(126);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
  }

  ~runtime_process() {
    if (!exit_code_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }

  bool send_frame(std::span<const uint8_t> body) {
    std::vector<uint8_t> frame(4);
    const auto n = uint32_t(body.size());
    for (int i = 0; i < 4; ++i) frame[size_t(i)] = uint8_t(n >> (8 * i));
    frame.insert(frame.end(), body.begin(), body.end());
    return send_raw(frame);
  }

  bool send_raw(std::span<const uint8_t> bytes) {
    for (size_t sent = 0; sent < bytes.size();) {
      ssize_t r = ::send(sock_.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (r <= 0) return false;
      sent += size_t(r);
    }
    return true;
  }

  // The next Result; nullopt (and a test failure) if none arrives in time or it is malformed.
  std::optional<result> receive(std::chrono::milliseconds timeout = 10s) {
    uint8_t header[4];
    if (!read_exact(header, 4, timeout)) return std::nullopt;
    std::vector<uint8_t> body(size_t(header[0]) | size_t(header[1]) << 8 | size_t(header[2]) << 16 |
                              size_t(header[3]) << 24);
    if (!read_exact(body.data(), body.size(), timeout)) return std::nullopt;
    const auto* res = proto::verified<proto::Result>(body);
    if (!res) {
      ADD_FAILURE() << "the Result fails verification";
      return std::nullopt;
    }
    return result{res->status(), std::string(proto::view(res->invocation_id())),
                  std::string(proto::text(proto::bytes(res->output()))), std::string(proto::view(res->error())),
                  std::string(proto::view(res->content_type()))};
  }

  std::optional<result> call(const invocation_fields& f) {
    if (!send_frame(invocation(f))) {
      ADD_FAILURE() << "cannot send the invocation";
      return std::nullopt;
    }
    return receive();
  }

  void close_socket() { sock_.reset(); }

  // What the process wrote to stdout / stderr since the last call (without waiting).
  std::string take_stdout() { return take(out_); }
  std::string take_stderr() { return take(err_); }

  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    for (auto until = std::chrono::steady_clock::now() + timeout; std::chrono::steady_clock::now() < until;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_code_;
      }
      std::this_thread::sleep_for(5ms);
    }
    return std::nullopt;
  }

 private:
  bool read_exact(uint8_t* p, size_t n, std::chrono::milliseconds timeout) {
    while (n > 0) {
      pollfd pfd{.fd = sock_.get(), .events = POLLIN, .revents = 0};
      if (::poll(&pfd, 1, int(timeout.count())) != 1) {
        ADD_FAILURE() << "no Result within " << timeout.count() << " ms; stderr: " << take_stderr();
        return false;
      }
      ssize_t r = ::recv(sock_.get(), p, n, 0);
      if (r <= 0) {
        ADD_FAILURE() << "the runtime closed fd 3; stderr: " << take_stderr();
        return false;
      }
      p += r;
      n -= size_t(r);
    }
    return true;
  }

  static std::string take(const unique_fd& fd) {
    std::string text;
    char buf[4096];
    for (ssize_t r; (r = ::read(fd.get(), buf, sizeof buf)) > 0;) text.append(buf, size_t(r));
    return text;
  }

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  unique_fd sock_, out_, err_;
};

constexpr const char* test_handlers = R"(
exports.echo = (event) => event;
exports.describe = (event) => `${Buffer.isBuffer(event) ? 'bytes' : typeof event}: ${event}`;
exports.bytes = () => Buffer.from([0, 1, 2, 255]);
exports.later = async (event) => {
  await new Promise((resolve) => setTimeout(resolve, event.ms));
  return { waited: event.ms };
};
exports.fail = () => { throw new Error('boom from the handler'); };
exports.context = (event, ctx) => ({ ...ctx, remaining: ctx.remaining_ms() });
exports.pid = (event) => ({ pid: process.pid, i: event.i });
exports.log = (event) => { console.log(`log line ${event.n}`); return event.n; };
)";

class nodejs_runtime_test : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(node_binary)) << node_binary << " is missing: run tools/setup.sh";
    std::ofstream(dir_ / "handler.js") << test_handlers;
  }

  test::temp_dir dir_{"fnmesh-nodejs"};
};

TEST_F(nodejs_runtime_test, json_in_json_out) {
  runtime_process rt(dir_.path(), "handler.echo");
  auto r = rt.call({.id = "inv-json", .payload = R"({"a": [1, 2], "s": "x"})"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, proto::Status::ok) << r->error;
  EXPECT_EQ(r->invocation_id, "inv-json");
  EXPECT_EQ(r->output, R"({"a":[1,2],"s":"x"})");
  EXPECT_EQ(r->content_type, "application/json");
  EXPECT_EQ(r->error, "");
}

TEST_F(nodejs_runtime_test, text_and_bytes) {
  runtime_process rt(dir_.path(), "handler.describe");
  auto raw = rt.call({.payload = "not json"});
  ASSERT_TRUE(raw);
  EXPECT_EQ(raw->output, "bytes: not json");
  EXPECT_EQ(raw->content_type, "text/plain; charset=utf-8");
  auto json_string = rt.call({.payload = R"("hi")"});
  ASSERT_TRUE(json_string);
  EXPECT_EQ(json_string->output, "string: hi");
  auto invalid_utf8 = rt.call({.payload = "\xff\xfe"});
  ASSERT_TRUE(invalid_utf8);
  EXPECT_EQ(invalid_utf8->output.substr(0, 6), "bytes:");

  runtime_process bytes(dir_.path(), "handler.bytes");
  auto b = bytes.call({});
  ASSERT_TRUE(b);
  EXPECT_EQ(b->output, std::string("\x00\x01\x02\xff", 4));
  EXPECT_EQ(b->content_type, "application/octet-stream");
}

TEST_F(nodejs_runtime_test, big_payload_round_trip) {
  runtime_process rt(dir_.path(), "handler.echo");
  std::string big(3 << 20, 'x');
  auto r = rt.call({.payload = big});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, proto::Status::ok) << r->error;
  EXPECT_EQ(r->content_type, "application/octet-stream");
  EXPECT_TRUE(r->output == big) << r->output.size() << " bytes back";
}

TEST_F(nodejs_runtime_test, async_handler) {
  runtime_process rt(dir_.path(), "handler.later");
  auto t0 = std::chrono::steady_clock::now();
  auto r = rt.call({.payload = R"({"ms": 50})"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, proto::Status::ok) << r->error;
  EXPECT_EQ(r->output, R"({"waited":50})");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
}

TEST_F(nodejs_runtime_test, thrown_error_is_status_error_and_the_process_stays) {
  runtime_process rt(dir_.path(), "handler.fail");
  for (int i = 0; i < 2; ++i) {
    auto r = rt.call({.id = "inv-fail"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, proto::Status::error);
    EXPECT_EQ(r->invocation_id, "inv-fail");
    EXPECT_NE(r->error.find("Error: boom from the handler"), std::string::npos) << r->error;
    EXPECT_NE(r->error.find("handler.js"), std::string::npos) << r->error;  // the stack
    EXPECT_EQ(r->output, "");
  }
  EXPECT_NE(rt.take_stderr().find("boom from the handler"), std::string::npos);
}

TEST_F(nodejs_runtime_test, handler_that_cannot_load_answers_every_invocation) {
  runtime_process rt(dir_.path(), "handler.no_such_export");
  for (int i = 0; i < 2; ++i) {
    auto r = rt.call({});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, proto::Status::error);
    EXPECT_NE(r->error.find("cannot load handler handler.no_such_export"), std::string::npos) << r->error;
    EXPECT_NE(r->error.find("has no function no_such_export"), std::string::npos) << r->error;
  }
}

TEST_F(nodejs_runtime_test, two_hundred_invocations_on_one_process) {
  runtime_process rt(dir_.path(), "handler.pid");
  const std::string pid = R"({"pid":)" + std::to_string(rt.pid());
  for (int i = 0; i < 200; ++i) {
    auto r = rt.call({.id = "inv-" + std::to_string(i), .payload = R"({"i": )" + std::to_string(i) + "}"});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->output, pid + R"(,"i":)" + std::to_string(i) + "}");
    ASSERT_EQ(r->invocation_id, "inv-" + std::to_string(i));
  }
}

TEST_F(nodejs_runtime_test, context_fields) {
  runtime_process rt(dir_.path(), "handler.context", {"FNMESH_TIMEOUT_S=7"});
  ASSERT_TRUE(rt.call({.payload = "{}"}));  // started: the deadline below is not spent on Node's start
  auto r = rt.call({.id = "inv-ctx",
                    .function = "inspect",
                    .payload = "{}",
                    .trigger = proto::Trigger::event,
                    .source = "orders.created",
                    .deadline_ns = unix_now_ns() + 4'000'000'000,
                    .attempt = 3});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, proto::Status::ok) << r->error;
  for (const char* want : {R"("invocation_id":"inv-ctx")", R"("tenant":"test")", R"("function":"inspect")",
                           R"("version":"v1")", R"("attempt":3)", R"("trigger":"event")",
                           R"("source":"orders.created")", R"("content_type":"application/json")"})
    EXPECT_NE(r->output.find(want), std::string::npos) << want << " in " << r->output;
  auto remaining = [](const std::string& out) {
    auto at = out.find(R"("remaining":)");
    return at == std::string::npos ? -1 : std::stoi(out.substr(at + 12));
  };
  EXPECT_GT(remaining(r->output), 3000) << r->output;
  EXPECT_LE(remaining(r->output), 4000) << r->output;

  // No deadline given: the function's timeout from the start.
  auto fallback = rt.call({.payload = "{}"});
  ASSERT_TRUE(fallback);
  EXPECT_GT(remaining(fallback->output), 6000) << fallback->output;
  EXPECT_LE(remaining(fallback->output), 7000) << fallback->output;
  EXPECT_NE(fallback->output.find(R"("trigger":"cli")"), std::string::npos) << fallback->output;
}

TEST_F(nodejs_runtime_test, console_log_reaches_stdout_line_by_line) {
  runtime_process rt(dir_.path(), "handler.log");
  for (int n = 1; n <= 5; ++n) {
    auto r = rt.call({.payload = R"({"n": )" + std::to_string(n) + "}"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->output, std::to_string(n));
    // Written before the Result: already in the pipe when the Result arrives.
    EXPECT_EQ(rt.take_stdout(), "log line " + std::to_string(n) + "\n");
  }
}

TEST_F(nodejs_runtime_test, example_hello_node) {
  runtime_process rt(source_dir() / "examples/hello-node", "handler.handle");
  auto r = rt.call({.id = "inv-hello", .payload = R"({"name": "Ada"})"});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, proto::Status::ok) << r->error;
  EXPECT_EQ(r->output, R"({"greeting":"Hello, Ada!","invocation":"inv-hello"})");
}

TEST_F(nodejs_runtime_test, closed_socket_exits_zero) {
  runtime_process rt(dir_.path(), "handler.echo");
  ASSERT_TRUE(rt.call({.payload = "{}"}));
  rt.close_socket();
  EXPECT_EQ(rt.wait_exit(5s), 0);
}

TEST_F(nodejs_runtime_test, malformed_frames_exit_non_zero) {
  // A root offset far past the end of the buffer.
  runtime_process bad_root(dir_.path(), "handler.echo");
  const std::vector<uint8_t> garbage = {0xf0, 0xff, 0xff, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(bad_root.send_frame(garbage));
  EXPECT_EQ(bad_root.wait_exit(5s), 1);
  EXPECT_NE(bad_root.take_stderr().find("malformed frame"), std::string::npos);

  // A string whose length runs past the buffer.
  runtime_process bad_string(dir_.path(), "handler.echo");
  auto inv = invocation({.id = "inv-1"});
  const auto* root = flatbuffers::GetRoot<proto::Invocation>(inv.data());
  const auto at = size_t(reinterpret_cast<const uint8_t*>(root->id()) - inv.data());
  inv[at + 3] = 0x7f;
  ASSERT_TRUE(bad_string.send_frame(inv));
  EXPECT_EQ(bad_string.wait_exit(5s), 1);
  EXPECT_NE(bad_string.take_stderr().find("malformed frame"), std::string::npos);

  // A length over the 8 MiB limit.
  runtime_process too_long(dir_.path(), "handler.echo");
  const std::vector<uint8_t> header = {0xff, 0xff, 0xff, 0xff};
  ASSERT_TRUE(too_long.send_raw(header));
  EXPECT_EQ(too_long.wait_exit(5s), 1);
  EXPECT_NE(too_long.take_stderr().find("malformed frame"), std::string::npos);
}

// Printed, not asserted: the warm node <-> runtime round trip.
TEST_F(nodejs_runtime_test, warm_round_trip) {
  runtime_process rt(dir_.path(), "handler.echo");
  ASSERT_TRUE(rt.call({.payload = "ping"}));
  const auto frame = invocation({.payload = "ping"});
  std::vector<int64_t> took;
  for (int i = 0; i < 1000; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(rt.send_frame(frame));
    auto r = rt.receive();
    took.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->output, "ping");
  }
  std::sort(took.begin(), took.end());
  std::printf("nodejs warm round trip over 1000 invocations: p50 %.1f us, p99 %.1f us\n", took[500] / 1e3,
              took[990] / 1e3);
}

}  // namespace
}  // namespace fnmesh
