# Function logs: lines published with broker::log_publisher, stored by FNMESH_LOGS, printed
# by the real `fnmesh logs` (last N, --json, --since, -f until SIGTERM), on a real nats-server.
fnmesh_test(NAME logs_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/logs_test.cc
  DEPS fnmesh::broker_client fnmesh::test_support nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 240)
add_dependencies(logs_test fnmesh)
