# The real fnmesh-collector's HTTP query API against sums computed in the test: every
# grouping and filter, replays, SIGKILL mid-ingestion, tenancy, bad parameters, a corrupt
# database, retention; and outside clients (collector_python_test.py with Debian's
# python3-zmq and the flatc --python module of the build tree, then curl).
fnmesh_test(NAME collector_api_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/collector_api_test.cc
  DEPS fnmesh::broker_client fnmesh::proto fnmesh::test_support cppzmq
       nlohmann_json::nlohmann_json
  LABELS integration
  TIMEOUT 300)
add_dependencies(collector_api_test fnmesh-collector fnmesh_proto_generated)
