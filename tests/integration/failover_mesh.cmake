# Issue 7, many nodes and no scheduler, seen by a user: work spreads over three nodes, a
# nats-server killed in a 3-server cluster loses and doubles nothing, a failing async
# invocation lands in the DLQ and is redriven, and random SIGKILLs of nodes, the collector
# and nats-servers under load leave exactly one final result per invocation.
fnmesh_test(NAME failover_mesh_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/failover_mesh_test.cc
  DEPS fnmesh::broker_client fnmesh::common fnmesh::test_support
  LABELS integration
  TIMEOUT 900)
add_dependencies(failover_mesh_test fnmesh-node fnmesh-collector fnmesh fnmesh_example_echo)
