# bpf_bench: what node/bpf's CPU meter costs (issue 4): the BPF programs' run time per
# context switch and per check (bpf_stats) under a ping-pong load in unwatched, watched and
# armed cgroups, and what the periodic check costs a spinning task at several periods.
# Needs root and FNMESH_BPF; about 40 s (--quick: a quarter). Not a ctest test:
#   cmake --build build --target bpf_bench && build/bench/bpf_bench [--quick]
if(NOT FNMESH_BPF)
  return()
endif()
add_executable(bpf_bench ${CMAKE_CURRENT_LIST_DIR}/bpf_bench.cc)
target_compile_options(bpf_bench PRIVATE ${FNMESH_WARNINGS})
target_link_libraries(bpf_bench PRIVATE fnmesh::bpf fnmesh::sandbox)
set_target_properties(bpf_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
