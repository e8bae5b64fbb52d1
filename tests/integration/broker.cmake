# The NATS side against a real nats-server (tests/support fixture on an ephemeral port).
fnmesh_test(NAME broker_client_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/broker_client_test.cc
  DEPS fnmesh::broker_client fnmesh::test_support
  LABELS integration
  TIMEOUT 240)
