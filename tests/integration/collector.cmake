# The real fnmesh-collector binary: batches, acks, garbage, SIGKILL + restart, replays.
fnmesh_test(NAME collector_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/collector_test.cc
  DEPS fnmesh::broker_client fnmesh::proto fnmesh::test_support cppzmq
  LABELS integration
  TIMEOUT 120)
add_dependencies(collector_test fnmesh-collector)
