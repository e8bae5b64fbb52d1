# `fnmesh up --cluster 3 --nodes 2`: a 3-server JetStream cluster with 3 replicas and two
# nodes from one command, serving through the loss of one nats-server, then `down`.
fnmesh_test(NAME cli_cluster_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/cli_cluster_test.cc
  DEPS fnmesh::test_support fnmesh::broker_client nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 400)
add_dependencies(cli_cluster_test fnmesh fnmesh-node fnmesh-collector)
