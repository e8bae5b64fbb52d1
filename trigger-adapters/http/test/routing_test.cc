#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "trigger-adapters/http/routing.h"

namespace h = fnmesh::http_adapter;
namespace p = fnmesh::proto;

TEST(routing, names_each_endpoint_and_its_argument) {
  auto r = h::parse_route("POST", "/function/resize");
  EXPECT_EQ(r.what, h::endpoint::invoke_sync);
  EXPECT_EQ(r.name, "resize");
  r = h::parse_route("POST", "/async-function/resize?x=1");
  EXPECT_EQ(r.what, h::endpoint::invoke_async);
  EXPECT_EQ(r.name, "resize");
  r = h::parse_route("GET", "/invocations/01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_EQ(r.what, h::endpoint::invocation);
  EXPECT_EQ(r.name, "01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_EQ(h::parse_route("GET", "/healthz").what, h::endpoint::healthz);
  EXPECT_EQ(h::parse_route("GET", "/metrics").what, h::endpoint::metrics);
}

TEST(routing, unknown_paths_and_wrong_methods_are_told_apart) {
  EXPECT_EQ(h::parse_route("GET", "/").what, h::endpoint::not_found);
  EXPECT_EQ(h::parse_route("POST", "/function/").what, h::endpoint::not_found);
  EXPECT_EQ(h::parse_route("POST", "/function/a/b").what, h::endpoint::not_found);
  EXPECT_EQ(h::parse_route("POST", "/functions/a").what, h::endpoint::not_found);
  EXPECT_EQ(h::parse_route("GET", "/function/resize").what, h::endpoint::method_not_allowed);
  EXPECT_EQ(h::parse_route("POST", "/healthz").what, h::endpoint::method_not_allowed);
  EXPECT_EQ(h::parse_route("DELETE", "/invocations/x").what, h::endpoint::method_not_allowed);
}

TEST(routing, result_status_maps_to_the_http_status_a_caller_expects) {
  EXPECT_EQ(h::http_status(p::Status::ok), 200);
  EXPECT_EQ(h::http_status(p::Status::error), 502);
  EXPECT_EQ(h::http_status(p::Status::crashed), 502);
  EXPECT_EQ(h::http_status(p::Status::out_of_memory), 502);
  EXPECT_EQ(h::http_status(p::Status::cpu_limit), 502);
  EXPECT_EQ(h::http_status(p::Status::timeout), 504);
  EXPECT_EQ(h::http_status(p::Status::rejected), 429);
  EXPECT_EQ(h::http_status(p::Status::no_such_function), 404);
}

TEST(routing, http_trigger_is_on_unless_the_manifest_turns_it_off) {
  auto enabled = [](std::optional<bool> http) {
    flatbuffers::FlatBufferBuilder b;
    flatbuffers::Offset<p::Triggers> t;
    if (http) t = p::CreateTriggers(b, *http);
    p::FunctionSpecBuilder sb(b);
    if (http) sb.add_triggers(t);
    b.Finish(sb.Finish());
    return h::http_enabled(*p::verified<p::FunctionSpec>(p::bytes(b)));
  };
  EXPECT_TRUE(enabled(std::nullopt));
  EXPECT_TRUE(enabled(true));
  EXPECT_FALSE(enabled(false));
}

TEST(routing, error_bodies_are_json_even_with_hostile_text) {
  auto body = h::error_json("no_such_function", {{"function", "a\"b\n\xff"}});
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["error"], "no_such_function");
  EXPECT_EQ(j["function"].get<std::string>().substr(0, 4), "a\"b\n");
}

TEST(routing, activation_report_becomes_the_last_attempt) {
  flatbuffers::FlatBufferBuilder b;
  auto first = p::CreateCompletion(
      b, p::CreateResultDirect(b, "01ARZ3NDEKTSV4RRFFQ69G5FAV", p::Status::crashed, nullptr,
                               "boom", "node-a", false, nullptr, 1));
  std::vector<uint8_t> out{'h', 'i'};
  auto second = p::CreateCompletion(
      b, p::CreateResultDirect(b, "01ARZ3NDEKTSV4RRFFQ69G5FAV", p::Status::ok, &out, "",
                               "node-b", false, nullptr, 2),
      p::CreateUsageDirect(b, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 2, "default", "echo"));
  std::vector<flatbuffers::Offset<p::Completion>> attempts{first, second};
  b.Finish(p::CreateActivationReportDirect(b, &attempts));
  auto* report = p::verified<p::ActivationReport>(p::bytes(b));
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(h::activation_json("01ARZ3NDEKTSV4RRFFQ69G5FAV", *report, "acme"), "")
      << "another tenant's invocation is not shown";
  auto j = nlohmann::json::parse(h::activation_json("01ARZ3NDEKTSV4RRFFQ69G5FAV", *report, "default"));
  EXPECT_EQ(j["id"], "01ARZ3NDEKTSV4RRFFQ69G5FAV");
  EXPECT_EQ(j["status"], "ok");
  EXPECT_EQ(j["output"], "hi");
  EXPECT_EQ(j["attempts"], 2);
  EXPECT_EQ(j["function"], "echo");

  flatbuffers::FlatBufferBuilder e;
  e.Finish(p::CreateActivationReport(e));
  EXPECT_EQ(h::activation_json("x", *p::verified<p::ActivationReport>(p::bytes(e)), "default"), "");
}

TEST(routing, metrics_count_answers_by_status) {
  h::request_metrics m;
  m.answered(200);
  m.answered(200);
  m.answered(404);
  EXPECT_EQ(m.answered_with(200), 2u);
  auto text = m.render({.malformed_results = 3, .unmatched_results = 1, .waiting = 5,
                        .callbacks_pending = 2, .callbacks_failed = 4});
  EXPECT_NE(text.find("fnmesh_http_requests_total{code=\"200\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("fnmesh_http_requests_total{code=\"404\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("fnmesh_http_results_malformed_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("fnmesh_http_waiting_requests 5\n"), std::string::npos);
  EXPECT_NE(text.find("fnmesh_http_callbacks_pending 2\n"), std::string::npos);
  EXPECT_NE(text.find("fnmesh_http_callbacks_failed_total 4\n"), std::string::npos);
}

TEST(routing, callback_urls_are_plain_http_with_a_host) {
  auto t = h::parse_callback_url("http://127.0.0.1:9000/hook?x=1");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->host, "127.0.0.1");
  EXPECT_EQ(t->port, "9000");
  EXPECT_EQ(t->path, "/hook?x=1");
  t = h::parse_callback_url("http://example.com");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->host, "example.com");
  EXPECT_EQ(t->port, "80");
  EXPECT_EQ(t->path, "/");
  t = h::parse_callback_url("http://[::1]:8080/r");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->host, "::1");
  EXPECT_EQ(t->port, "8080");
  for (const char* bad : {"https://example.com/", "ftp://x/", "http://", "http://:80/", "http://u@h/",
                          "http://h:0/", "http://h:99999/", "http://h:8x/", "http://h/a b", "example.com"})
    EXPECT_FALSE(h::parse_callback_url(bad)) << bad;
}
