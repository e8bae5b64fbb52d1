#pragma once
// bootstrapped_nats: a gtest fixture base for tests that talk to NATS directly — a real
// nats-server (nats_server.h) and a connection to it, with fnmesh's streams and buckets
// bootstrapped. Derived fixtures call bootstrapped_nats::SetUp() first. Test thread only.
#include <gtest/gtest.h>

#include <memory>

#include "broker/client/connection.h"
#include "broker/client/topology.h"
#include "tests/support/nats_server.h"

namespace fnmesh::test {

class bootstrapped_nats : public ::testing::Test {
 protected:
  void SetUp() override {
    nats_ = std::make_unique<nats_server>();
    auto c = broker::connection::connect({.urls = nats_->url(), .name = "fnmesh-test"});
    ASSERT_TRUE(c) << c.error().message();
    conn_ = std::move(*c);
    ASSERT_TRUE(broker::bootstrap(*conn_));
  }

  std::unique_ptr<nats_server> nats_;
  std::unique_ptr<broker::connection> conn_;
};

}  // namespace fnmesh::test
