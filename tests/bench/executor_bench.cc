// Warm round trip through the executor: run() on the caller's thread, the frame to the
// worker and back, done() on the loop thread, the caller woken. Nothing else (no NATS).
#include <benchmark/benchmark.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <cstdlib>
#include <filesystem>

#include "node/sandbox/executor.h"
#include "tests/support/sandbox_files.h"

namespace fnmesh::node {
namespace {

using test::build_dir;
using test::source_dir;

// Blocks in the kernel at once: std::atomic::wait() spins and yields first, which on two
// vCPUs steals the CPU from the loop and the worker being measured.
void futex_wait(std::atomic<uint32_t>& a, uint32_t old) {
  while (a.load(std::memory_order_acquire) == old)
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&a), FUTEX_WAIT_PRIVATE, old, nullptr, nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>& a) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&a), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

broker::function_ptr spec(const char* name, proto::Runtime runtime, const char* handler) {
  flatbuffers::FlatBufferBuilder b;
  b.Finish(proto::CreateFunctionSpecDirect(b, name, "v1", "bench", runtime, handler));
  auto bytes = proto::bytes(b);
  return std::make_shared<broker::function_record>(std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

std::vector<uint8_t> invocation(const char* function, std::string_view payload) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<uint8_t> data(payload.begin(), payload.end());
  b.Finish(proto::CreateInvocationDirect(b, "01BENCH", "bench", function, "v1", &data, "application/json"));
  auto bytes = proto::bytes(b);
  return {bytes.begin(), bytes.end()};
}

executor_options options(std::chrono::microseconds spin = {}, bool bpf = true) {
  static int instance = 0;
  return {.sandboxes = test::sandbox_files("executor-bench-" + std::to_string(::getpid()) + "-" + std::to_string(++instance),
                                           std::filesystem::temp_directory_path() / "fnmesh-executor-bench"),
          .spin = spin,
          .bpf = bpf};
}

void round_trip(benchmark::State& state, proto::Runtime runtime, const char* name, const char* handler,
                const std::filesystem::path& code_dir, std::string_view payload) {
  // Arguments: the loop's spin before blocking, in microseconds; BPF meter on (1) or off.
  executor exec(options(std::chrono::microseconds(state.range(0)), state.range(1) != 0));
  auto fn = spec(name, runtime, handler);
  auto inv = invocation(name, payload);
  std::atomic<uint32_t> finished{0};
  proto::Status last = proto::Status::ok;
  auto once = [&] {
    uint32_t before = finished.load(std::memory_order_acquire);
    exec.run(work{.function = fn,
                  .code_dir = code_dir,
                  .invocation = inv,
                  .timeout = std::chrono::seconds(10),
                  .done =
                      [&](outcome&& o) {
                        last = o.status;
                        finished.fetch_add(1, std::memory_order_release);
                        futex_wake(finished);
                      }});
    futex_wait(finished, before);
  };
  once();  // the cold start
  if (last != proto::Status::ok) {
    state.SkipWithError("the warm-up invocation failed");
    return;
  }
  for (auto _ : state) once();
  if (last != proto::Status::ok) state.SkipWithError("an invocation failed");
  state.SetItemsProcessed(state.iterations());
}

void native_echo(benchmark::State& state) {
  round_trip(state, proto::Runtime::native, "echo", "echo", build_dir() / "examples/echo", "{}");
}
void python_hello(benchmark::State& state) {
  round_trip(state, proto::Runtime::python3, "hello", "handler.handle", source_dir() / "examples/hello", R"({"name":"bench"})");
}
void native_echo_64k(benchmark::State& state) {
  round_trip(state, proto::Runtime::native, "echo", "echo", build_dir() / "examples/echo", std::string(64 * 1024, 'x'));
}

// Throughput with C invocations in flight (C warm echo workers): each iteration hands
// over C invocations at once and waits for all of them. Second argument: CPU counted by
// the BPF meter (1) or by cgroups (0), to compare in one run (issue 4: cost <= 2 %).
void native_echo_concurrent(benchmark::State& state) {
  const auto c = uint32_t(state.range(0));
  executor exec(options({}, state.range(1) != 0));
  auto fn = spec("echo", proto::Runtime::native, "echo");
  auto inv = invocation("echo", "{}");
  std::atomic<uint32_t> finished{0};
  std::atomic<uint32_t> failed{0};
  auto batch = [&] {
    uint32_t target = finished.load(std::memory_order_acquire) + c;
    for (uint32_t i = 0; i < c; ++i)
      exec.run(work{.function = fn,
                    .code_dir = build_dir() / "examples/echo",
                    .invocation = inv,
                    .timeout = std::chrono::seconds(10),
                    .done =
                        [&](outcome&& o) {
                          if (o.status != proto::Status::ok) failed.fetch_add(1);
                          finished.fetch_add(1, std::memory_order_release);
                          futex_wake(finished);
                        }});
    for (uint32_t now; (now = finished.load(std::memory_order_acquire)) < target;) futex_wait(finished, now);
  };
  batch();  // cold starts
  for (auto _ : state) batch();
  if (failed.load() > 0) state.SkipWithError("invocations failed");
  state.SetItemsProcessed(int64_t(state.iterations()) * c);
}

// The floor: the same frames to the echo worker over a socketpair with blocking calls
// on one thread, no event loop and no thread hand-off.
void raw_socketpair_echo(benchmark::State& state) {
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
    state.SkipWithError("socketpair");
    return;
  }
  auto program = build_dir() / "examples/echo/echo";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(sp[1], 3);
    ::execl(program.c_str(), program.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(sp[1]);
  auto inv = invocation("echo", "{}");
  std::vector<uint8_t> frame(4 + inv.size());
  uint32_t n = uint32_t(inv.size());
  std::memcpy(frame.data(), &n, 4);
  std::memcpy(frame.data() + 4, inv.data(), inv.size());
  std::vector<uint8_t> reply(1 << 16);
  for (auto _ : state) {
    if (::write(sp[0], frame.data(), frame.size()) != ssize_t(frame.size())) break;
    uint32_t want = 0;
    size_t got = 0;
    while (got < 4 || got < 4 + want) {
      ssize_t r = ::read(sp[0], reply.data() + got, reply.size() - got);
      if (r <= 0) break;
      got += size_t(r);
      if (got >= 4) std::memcpy(&want, reply.data(), 4);
    }
  }
  ::close(sp[0]);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(native_echo_concurrent)
    ->ArgNames({"c", "bpf"})
    ->Args({16, 0})
    ->Args({16, 1})
    ->Args({16, 0})
    ->Args({16, 1})
    ->UseRealTime()
    ->MinTime(2.0);
BENCHMARK(raw_socketpair_echo)->UseRealTime()->MinTime(2.0);
BENCHMARK(native_echo)->ArgNames({"spin_us", "bpf"})->ArgsProduct({{0, 50, 200}, {0, 1}})->UseRealTime()->MinTime(2.0);
BENCHMARK(native_echo_64k)->ArgNames({"spin_us", "bpf"})->ArgsProduct({{0}, {0, 1}})->UseRealTime()->MinTime(2.0);
BENCHMARK(python_hello)->ArgNames({"spin_us", "bpf"})->ArgsProduct({{0}, {0, 1}})->UseRealTime()->MinTime(2.0);

}  // namespace
}  // namespace fnmesh::node

BENCHMARK_MAIN();
