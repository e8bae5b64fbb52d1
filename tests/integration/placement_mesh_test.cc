// Membership and placement with no coordinator, seen from the user: what `fnmesh nodes`
// lists, and which node ran each invocation and whether it was a cold start (DESIGN §4).
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <tuple>

#include "tests/support/eventually.h"
#include "tests/support/mesh.h"

namespace p = fnmesh::proto;
using namespace std::chrono_literals;
using namespace fnmesh::test;

namespace {

struct ran {
  std::string node;
  bool cold = false;
  p::Status status = p::Status::ok;
};

class placement : public mesh {
 protected:
  // Publishes `n` sync invocations at once and waits for every result.
  std::vector<ran> burst(const std::string& fn, int n) {
    std::set<std::string> ids;
    for (int i = 0; i < n; ++i) {
      auto published = invoke(fn, "{}");
      EXPECT_TRUE(published) << published.error().message();
      if (published) ids.insert(published->invocation_id);
    }
    std::vector<ran> out;
    while (!ids.empty()) {
      auto got = router_->receive(30s);
      if (!got) {
        ADD_FAILURE() << ids.size() << " results missing";
        break;
      }
      const auto& r = got->get();
      if (ids.erase(std::string(p::view(r.invocation_id()))))
        out.push_back({std::string(p::view(r.node_id())), r.cold_start(), r.status()});
    }
    return out;
  }
  static int cold_starts(const std::vector<ran>& runs) {
    int n = 0;
    for (const auto& r : runs) n += r.cold;
    return n;
  }
};

TEST_F(placement, a_function_called_again_and_again_runs_warm_wherever_its_sandbox_waits) {
  for (const char* name : {"node-a", "node-b", "node-c"}) start_node(name, {"--slots", "4"});
  deploy(write_function("quick", "    concurrency: 2\n",
                        "def handle(event, ctx):\n    return {'ok': True}\n"));
  // One at a time: the sandbox of the first call waits for the next on the server, so
  // the other nodes never start one.
  std::vector<ran> runs;
  for (int i = 0; i < 30; ++i) {
    auto r = call("quick", "{}");
    ASSERT_EQ(r.get().status(), p::Status::ok) << p::view(r.get().error());
    runs.push_back({std::string(p::view(r.get().node_id())), r.get().cold_start()});
  }
  EXPECT_LE(cold_starts(runs), 2) << "one sandbox serves calls made one at a time";
  // Bursts: never more sandboxes than nodes x concurrency, however often it is called.
  for (int round = 0; round < 4; ++round) {
    auto more = burst("quick", 12);
    ASSERT_EQ(more.size(), 12u);
    for (const auto& r : more) EXPECT_EQ(r.status, p::Status::ok);
    runs.insert(runs.end(), more.begin(), more.end());
  }
  EXPECT_LE(cold_starts(runs), 3 * 2);
}

TEST_F(placement, a_function_with_labels_runs_only_on_nodes_that_have_them) {
  start_node("node-plain");
  start_node("node-gpu", {"--label", "accelerator=gpu", "--label", "zone=a"});
  start_node("node-other-zone", {"--label", "accelerator=gpu", "--label", "zone=b"});
  deploy(write_function("render", "    labels:\n      accelerator: gpu\n      zone: a\n",
                        "def handle(event, ctx):\n    return 'done'\n"));
  std::map<std::string, int> by_node;
  for (int i = 0; i < 5; ++i) {
    auto r = call("render", "{}");
    ASSERT_EQ(r.get().status(), p::Status::ok) << p::view(r.get().error());
    ++by_node[std::string(p::view(r.get().node_id()))];
  }
  for (const auto& r : burst("render", 12)) ++by_node[r.node];
  EXPECT_EQ(by_node, (std::map<std::string, int>{{"node-gpu", 17}}));
}

TEST_F(placement, idle_sandboxes_of_one_function_do_not_starve_another) {
  start_node("node-a", {"--slots", "2"});
  const std::string sleepy = "import time\ndef handle(event, ctx):\n    time.sleep(0.3)\n    return 'ok'\n";
  deploy(write_function("first", "", sleepy));
  deploy(write_function("second", "", sleepy));
  // Two sandboxes of `first` now wait idle, holding both slots' waiting requests for
  // minutes (keep_warm); `second` must still run at once.
  auto warmed = burst("first", 2);
  ASSERT_EQ(warmed.size(), 2u);
  std::this_thread::sleep_for(500ms);
  auto r = call("second", "{}", 10s);
  EXPECT_EQ(r.get().status(), p::Status::ok) << p::view(r.get().error());
  // And `first` is still served by its warm sandboxes afterwards.
  auto again = call("first", "{}", 10s);
  EXPECT_EQ(again.get().status(), p::Status::ok);
}

TEST_F(placement, a_new_node_takes_backlog_it_did_not_ring_for) {
  // Invocations published while no node runs: no doorbell reaches anyone, and the node
  // started afterwards finds them through the stream's pending counts.
  deploy(write_function("queued", "", "def handle(event, ctx):\n    return 'ok'\n"));
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto published = invoke("queued", "{}", false);
    ASSERT_TRUE(published) << published.error().message();
    ids.insert(published->invocation_id);
  }
  start_node("node-late");
  for (const auto& id : ids)
    EXPECT_TRUE(eventually([&] { return attempts(id).size() == 1; }, 20s)) << id;
}

TEST_F(placement, nodes_lists_every_live_node_and_forgets_a_dead_one_within_the_ttl) {
  start_node("node-a", {"--slots", "3", "--label", "zone=a"});
  start_node("node-b", {"--slots", "5"});
  deploy(write_function("warmed", "", "def handle(event, ctx):\n    return 'ok'\n"));
  ASSERT_EQ(call("warmed", "{}").get().status(), p::Status::ok);
  // name -> (slots, labels, warm)
  using row = std::tuple<int, std::string, std::string>;
  auto listed = [&] {
    std::map<std::string, row> out;
    const auto r = cli({"nodes", "--json"});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    for (const auto& n : nlohmann::json::parse(r.out, nullptr, false))
      out[n.at("node_id").get<std::string>()] = {n.at("slots").get<int>(), n.at("labels").get<std::string>(),
                                                 n.at("warm").get<std::string>()};
    return out;
  };
  // Heartbeats every 5 s: the warm sandbox shows on the node that ran the call.
  ASSERT_TRUE(eventually([&] {
    auto now = listed();
    return now.size() == 2 && std::multiset<std::string>{std::get<2>(now["node-a"]), std::get<2>(now["node-b"])} ==
                                  std::multiset<std::string>{"-", "default/warmed=1"};
  }, 15s)) << ::testing::PrintToString(listed());
  auto both = listed();
  EXPECT_EQ(std::get<0>(both["node-a"]), 3);
  EXPECT_EQ(std::get<1>(both["node-a"]), "zone=a");
  EXPECT_EQ(both["node-b"], row(5, "-", std::get<2>(both["node-b"])));

  // No goodbye: only the bucket's 15 s TTL removes it (nats-server expires once a second).
  nodes_.at("node-b").signal(SIGKILL);
  EXPECT_TRUE(eventually([&] { return listed().size() == 1; }, 20s)) << ::testing::PrintToString(listed());
  EXPECT_TRUE(listed().contains("node-a"));
}

}  // namespace
