# collector_bench: the billing collector's figures (issue 6): ingestion records/s through
# store::ingest and through the real fnmesh-collector over ZeroMQ, and p50/p99 of three
# typical queries, one lookup and the list's worst case over 1,000,000 records,
# in-process and over HTTP. The database is built once (about 20 s) and cached in
# $FNMESH_BENCH_DIR (default $TMPDIR/fnmesh-collector-bench); about 2 minutes in all.
# Not a ctest test:
#   cmake --build build --target collector_bench && build/bench/collector_bench [--benchmark_filter=query]
add_executable(collector_bench ${CMAKE_CURRENT_LIST_DIR}/collector_bench.cc)
target_compile_options(collector_bench PRIVATE ${FNMESH_WARNINGS})
target_link_libraries(collector_bench PRIVATE fnmesh::collector fnmesh::broker_client
  fnmesh::test_support benchmark::benchmark)
set_target_properties(collector_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
add_dependencies(collector_bench fnmesh-collector)
