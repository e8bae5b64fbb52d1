# The fnmesh CLI end to end: `fnmesh up --ports auto` in a temp FNMESH_HOME, deploy,
# invoke, bad input, `status --json`, `down`; billing, activations and result against a
# collector fed known attempts over ZeroMQ.
fnmesh_test(NAME cli_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/cli_test.cc
  DEPS fnmesh::test_support fnmesh::broker_client fnmesh::proto cppzmq nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 400)
add_dependencies(cli_test fnmesh fnmesh-node fnmesh-collector fnmesh-http fnmesh-events fnmesh_example_echo)
