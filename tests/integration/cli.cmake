# The fnmesh CLI end to end: `fnmesh up --ports auto` in a temp FNMESH_HOME, deploy,
# invoke, bad input, `status --json`, `down`.
fnmesh_test(NAME cli_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/cli_test.cc
  DEPS fnmesh::test_support nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 400)
add_dependencies(cli_test fnmesh fnmesh-node fnmesh-collector fnmesh-http fnmesh-events fnmesh_example_echo)
