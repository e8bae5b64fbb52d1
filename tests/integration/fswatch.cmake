# fnmesh-fswatch as users run it: real adapters watching temp folders against a real
# nats-server (tests/support fixture on an ephemeral port).
fnmesh_test(NAME fswatch_adapter_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/fswatch_adapter_test.cc
  DEPS fnmesh::broker_client fnmesh::proto fnmesh::test_support nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 180)
add_dependencies(fswatch_adapter_test fnmesh-fswatch)
