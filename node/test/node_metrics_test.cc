#include "node/node_metrics.h"

#include <gtest/gtest.h>

namespace {

namespace p = fnmesh::proto;

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST(node_metrics, before_any_invocation_every_kill_reason_shows_zero) {
  const std::string text = fnmesh::node::node_metrics().render(0);
  EXPECT_TRUE(text.starts_with("# HELP fnmesh_node_invocations_total ")) << text;
  EXPECT_TRUE(has_line(text, "# TYPE fnmesh_node_kills_total counter")) << text;
  for (const char* reason : {"cpu_limit", "out_of_memory", "timeout"})
    EXPECT_TRUE(has_line(text, std::string("fnmesh_node_kills_total{reason=\"") + reason + "\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "# TYPE fnmesh_node_running gauge")) << text;
  EXPECT_TRUE(has_line(text, "fnmesh_node_running 0")) << text;
  EXPECT_EQ(text.find("fnmesh_node_accounting_info"), std::string::npos) << text;
}

TEST(node_metrics, counts_by_status_sums_cpu_and_kills_across_functions) {
  fnmesh::node::node_metrics m;
  m.count("default", "burn", p::Status::ok, 300'000'000, p::AccountingSource::bpf);
  m.count("default", "burn", p::Status::ok, 250'000'001, p::AccountingSource::bpf);
  m.count("default", "burn", p::Status::cpu_limit, 100'000'000, p::AccountingSource::bpf);
  m.count("default", "sleepy", p::Status::timeout, 20'000'000, p::AccountingSource::bpf);
  m.count("acme", "sleepy", p::Status::timeout, 0, p::AccountingSource::cgroup);
  const std::string text = m.render(3);
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_invocations_total{tenant="default",function="burn",status="ok"} 2)")) << text;
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_invocations_total{tenant="default",function="burn",status="cpu_limit"} 1)")) << text;
  EXPECT_EQ(text.find(R"(function="burn",status="error")"), std::string::npos) << text;
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_cpu_seconds_total{tenant="default",function="burn"} 0.650000001)")) << text;
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_cpu_seconds_total{tenant="acme",function="sleepy"} 0.000000000)")) << text;
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_kills_total{reason="cpu_limit"} 1)")) << text;
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_kills_total{reason="timeout"} 2)")) << text;
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_kills_total{reason="out_of_memory"} 0)")) << text;
  EXPECT_TRUE(has_line(text, "fnmesh_node_running 3")) << text;
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_accounting_info{source="cgroup"} 1)")) << text;
}

TEST(node_metrics, label_values_are_escaped) {
  fnmesh::node::node_metrics m;
  m.count("te\"nant", "fn\\with\nnewline", p::Status::ok, 1'000'000'000, p::AccountingSource::bpf);
  const std::string text = m.render(0);
  EXPECT_TRUE(has_line(text, R"(fnmesh_node_cpu_seconds_total{tenant="te\"nant",function="fn\\with\nnewline"} 1.000000000)"))
      << text;
}

}  // namespace
