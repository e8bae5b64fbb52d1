# scale_bench: what adding nodes buys (issue 7). A real nats-server, collector and 1, 2, 3
# fnmesh-node processes (4 slots each): invocations/s, p50/p99 and the ratio to one node
# for a sleep-bound and a CPU-bound python function, then a new node's time from start
# to its first invocation under a backlog. Prints figures, asserts nothing. Needs root;
# about 2 minutes (--seconds, --warmup, --rounds to change). Not a ctest test:
#   cmake --build build --target scale_bench && build/bench/scale_bench [--seconds 10] [--rounds 3]
add_executable(scale_bench ${CMAKE_CURRENT_LIST_DIR}/scale_bench.cc)
target_compile_options(scale_bench PRIVATE ${FNMESH_WARNINGS})
target_link_libraries(scale_bench PRIVATE fnmesh::broker_client fnmesh::test_support CLI11::CLI11)
set_target_properties(scale_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
add_dependencies(scale_bench fnmesh-node fnmesh-collector fnmesh)
