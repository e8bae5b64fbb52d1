# The trigger adapters in front of a whole mesh with real sandboxes: curl against
# fnmesh-http, a callback, two fnmesh-cron and two fnmesh-fswatch copies.
fnmesh_test(NAME adapters_mesh_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/adapters_mesh_test.cc
  DEPS fnmesh::broker_client fnmesh::test_support
  LABELS integration
  TIMEOUT 300)
add_dependencies(adapters_mesh_test fnmesh-node fnmesh-collector fnmesh-http fnmesh-cron fnmesh-fswatch
                 fnmesh fnmesh_example_echo)
