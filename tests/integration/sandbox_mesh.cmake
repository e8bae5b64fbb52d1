# Sandboxed functions through real processes (nats-server, fnmesh-collector, fnmesh-node,
# the fnmesh CLI): concurrency cap, warm reuse and keep-warm, nodejs, `fnmesh logs` of
# handler output, out_of_memory and crashed. Needs root (the node runs sandboxes).
fnmesh_test(NAME sandbox_mesh_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/sandbox_mesh_test.cc
  DEPS fnmesh::broker_client fnmesh::test_support nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 300)
add_dependencies(sandbox_mesh_test fnmesh-node fnmesh-collector fnmesh)
