# A node's /metrics scraped over HTTP while real sandboxes run (nats-server, collector,
# fnmesh-node): CPU seconds per function, kills by reason, a free port per node. Needs root.
fnmesh_test(NAME metrics_mesh_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/metrics_mesh_test.cc
  DEPS fnmesh::broker_client fnmesh::test_support nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 300)
add_dependencies(metrics_mesh_test fnmesh-node fnmesh-collector fnmesh)
