# The one place that sets the language standard, warnings and target naming.
#
#   fnmesh_library(NAME name SRCS a.cc b.cc [DEPS fnmesh::x lib...] [HEADER_ONLY])
#       builds fnmesh_<name>, aliased fnmesh::<name>; include root = repository root.
#   fnmesh_binary(NAME fnmesh-node SRCS main.cc DEPS ...)      -> build/bin/<NAME>
#   fnmesh_test(NAME x_test SRCS x_test.cc DEPS ... LABELS unit|integration)
include_guard(GLOBAL)

set(FNMESH_WARNINGS -Wall -Wextra -Werror -Wno-missing-field-initializers)

function(fnmesh_library)
  cmake_parse_arguments(A "HEADER_ONLY" "NAME" "SRCS;DEPS" ${ARGN})
  set(target fnmesh_${A_NAME})
  if(A_HEADER_ONLY)
    add_library(${target} INTERFACE)
    target_include_directories(${target} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${target} INTERFACE ${A_DEPS})
  else()
    add_library(${target} STATIC ${A_SRCS})
    target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_compile_options(${target} PRIVATE ${FNMESH_WARNINGS})
    target_link_libraries(${target} PUBLIC ${A_DEPS})
  endif()
  add_library(fnmesh::${A_NAME} ALIAS ${target})
endfunction()

function(fnmesh_binary)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_compile_options(${A_NAME} PRIVATE ${FNMESH_WARNINGS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS})
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
endfunction()

function(fnmesh_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_compile_options(${A_NAME} PRIVATE ${FNMESH_WARNINGS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  add_test(NAME ${A_NAME} COMMAND ${A_NAME})
  set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT}
    ENVIRONMENT "FNMESH_BIN_DIR=${PROJECT_BINARY_DIR}/bin;FNMESH_SOURCE_DIR=${PROJECT_SOURCE_DIR};FNMESH_BUILD_DIR=${PROJECT_BINARY_DIR}")
endfunction()
