# executor_bench: warm round trips node <-> worker (native echo, python hello) through
# the executor's event loop. Prints ns/op; not a ctest test.
#   build/bench/executor_bench [--benchmark_filter=native]
add_executable(executor_bench ${CMAKE_CURRENT_LIST_DIR}/executor_bench.cc)
target_compile_options(executor_bench PRIVATE ${FNMESH_WARNINGS})
target_link_libraries(executor_bench PRIVATE fnmesh::sandbox fnmesh::test_support benchmark::benchmark)
set_target_properties(executor_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
add_dependencies(executor_bench fnmesh_proto_generated fnmesh_example_echo fnmesh-zygote fnmesh-python-zygote)
