# sandbox_bench: what a sandbox costs (issue 3), one table in one run: cold start p50/p99
# for native, python3 and nodejs; warm node <-> sandbox round trips; /bin/true in
# bubblewrap (the reference) and as an exec function, with the
# ratios. Needs root and /usr/bin/bwrap; at most about 90 s (--quick: a fifth of that).
# Not a ctest test:
#   cmake --build build --target sandbox_bench && build/bench/sandbox_bench [--quick] [--no-bpf]
add_executable(sandbox_bench ${CMAKE_CURRENT_LIST_DIR}/sandbox_bench.cc)
target_compile_options(sandbox_bench PRIVATE ${FNMESH_WARNINGS})
target_link_libraries(sandbox_bench PRIVATE fnmesh::sandbox fnmesh::test_support)
set_target_properties(sandbox_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
add_dependencies(sandbox_bench fnmesh_proto_generated fnmesh_example_echo fnmesh-zygote fnmesh-python-zygote)
