# The events adapter as users run it: the real fnmesh-events binary (two at once, killed,
# restarted) against a real nats-server that is itself restarted, with events published by
# the npm package `nats` (tools/test.sh installs it under build/npm).
fnmesh_test(NAME events_adapter_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/events_adapter_test.cc
  DEPS fnmesh::broker_client fnmesh::proto fnmesh::test_support
  LABELS integration
  TIMEOUT 300)
add_dependencies(events_adapter_test fnmesh-events)
