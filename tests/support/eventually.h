#pragma once
// eventually(): polls a condition every 100 ms until it holds or `timeout` passes.
#include <chrono>
#include <thread>

namespace fnmesh::test {

// True once `pred()` is; false if it still is not after `timeout` (checked once more then).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

}  // namespace fnmesh::test
