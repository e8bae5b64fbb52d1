# Placement with no coordinator (DESIGN §4): warm sandboxes win, cold starts stay bounded,
# labels pick nodes, idle sandboxes of one function never starve another — real nodes.
fnmesh_test(NAME placement_mesh_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/placement_mesh_test.cc
  DEPS fnmesh::broker_client fnmesh::test_support
  LABELS integration
  TIMEOUT 400)
add_dependencies(placement_mesh_test fnmesh-node fnmesh-collector fnmesh)
