# The whole path with real processes: nats-server, fnmesh-collector, fnmesh-node(s), the
# events adapter and the fnmesh CLI, driven by what a user sees (results, billing).
fnmesh_test(NAME mesh_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/mesh_test.cc
  DEPS fnmesh::broker_client fnmesh::test_support
  LABELS integration
  TIMEOUT 400)
add_dependencies(mesh_test fnmesh-node fnmesh-collector fnmesh-events fnmesh fnmesh_example_echo)
