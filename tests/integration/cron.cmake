# fnmesh-cron as users run it: real adapters (two at once where exactly-once is promised)
# against a real nats-server (tests/support fixture on an ephemeral port).
fnmesh_test(NAME cron_adapter_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/cron_adapter_test.cc
  DEPS fnmesh::broker_client fnmesh::proto fnmesh::test_support fnmesh::common nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 120)
add_dependencies(cron_adapter_test fnmesh-cron)
