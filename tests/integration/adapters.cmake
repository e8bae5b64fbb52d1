# The http adapter as users run it: the real fnmesh-http binary against a real nats-server
# (tests/support fixture on an ephemeral port), spoken to with sockets and curl.
fnmesh_test(NAME http_adapter_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/http_adapter_test.cc
  DEPS fnmesh::broker_client fnmesh::proto fnmesh::test_support cppzmq
  LABELS integration
  TIMEOUT 180)
add_dependencies(http_adapter_test fnmesh-http fnmesh-collector)  # collector: GET /invocations/<id>
