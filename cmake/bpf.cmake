# BPF programs: CO-RE objects built with clang -target bpf against a vmlinux.h made from
# this machine's kernel BTF, and libbpf skeletons from bpftool; all in the build tree.
#
#   include(bpf) once FNMESH_BPF is defined: finds clang, bpftool, libbpf and
#       /sys/kernel/btf/vmlinux; when one is missing it says so and sets FNMESH_BPF OFF
#       (for this configure: a later one looks again).
#   fnmesh_bpf_skeleton(NAME x SRC node/bpf/x.bpf.c)
#       -> <build>/node/bpf/x.skel.h (struct x_bpf; #include "node/bpf/x.skel.h") and the
#          target fnmesh_bpf_x_skel that makes it. The .bpf.c includes "vmlinux.h",
#          <bpf/...> and headers rooted at the repository root.
include_guard(GLOBAL)

if(NOT FNMESH_BPF)
  return()
endif()

set(FNMESH_VMLINUX_BTF /sys/kernel/btf/vmlinux)
find_program(FNMESH_CLANG NAMES clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14)
find_program(FNMESH_BPFTOOL bpftool PATHS /usr/sbin /sbin)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(LIBBPF QUIET IMPORTED_TARGET libbpf)
endif()

set(bpf_missing "")
if(NOT FNMESH_CLANG)
  list(APPEND bpf_missing "clang")
endif()
if(NOT FNMESH_BPFTOOL)
  list(APPEND bpf_missing "bpftool")
endif()
if(NOT LIBBPF_FOUND)
  list(APPEND bpf_missing "libbpf (pkg-config libbpf)")
endif()
if(NOT EXISTS ${FNMESH_VMLINUX_BTF})
  list(APPEND bpf_missing "kernel BTF (${FNMESH_VMLINUX_BTF})")
endif()
if(bpf_missing)
  list(JOIN bpf_missing ", " bpf_missing)
  message(WARNING "FNMESH_BPF turned OFF: missing ${bpf_missing}. fnmesh builds without the eBPF meters.")
  set(FNMESH_BPF OFF)
  return()
endif()
message(STATUS "FNMESH_BPF: ${FNMESH_CLANG}, ${FNMESH_BPFTOOL}, libbpf ${LIBBPF_VERSION}")

set(FNMESH_BPF_GEN_DIR ${PROJECT_BINARY_DIR}/bpf)
set(FNMESH_VMLINUX_H ${FNMESH_BPF_GEN_DIR}/vmlinux.h)
add_custom_command(OUTPUT ${FNMESH_VMLINUX_H}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${FNMESH_BPF_GEN_DIR}
  COMMAND sh -c "'${FNMESH_BPFTOOL}' btf dump file '${FNMESH_VMLINUX_BTF}' format c > '${FNMESH_VMLINUX_H}.tmp'"
  COMMAND ${CMAKE_COMMAND} -E rename ${FNMESH_VMLINUX_H}.tmp ${FNMESH_VMLINUX_H}
  DEPENDS ${FNMESH_VMLINUX_BTF}
  COMMENT "Generating vmlinux.h from ${FNMESH_VMLINUX_BTF}"
  VERBATIM)
add_custom_target(fnmesh_vmlinux_h DEPENDS ${FNMESH_VMLINUX_H})

function(fnmesh_bpf_skeleton)
  cmake_parse_arguments(A "" "NAME;SRC" "" ${ARGN})
  set(src ${PROJECT_SOURCE_DIR}/${A_SRC})
  set(out ${PROJECT_BINARY_DIR}/node/bpf)
  set(obj ${out}/${A_NAME}.bpf.o)
  set(skel ${out}/${A_NAME}.skel.h)
  set(includes -I${FNMESH_BPF_GEN_DIR} -I${PROJECT_SOURCE_DIR})
  foreach(dir ${LIBBPF_INCLUDE_DIRS})
    list(APPEND includes -I${dir})
  endforeach()
  # clang writes the object with DWARF (its BTF comes from -g); bpftool gen object links
  # it into the object the skeleton embeds, without the DWARF.
  add_custom_command(OUTPUT ${obj}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
    COMMAND ${FNMESH_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror ${includes}
            -MD -MF ${obj}.d -MT ${obj} -c ${src} -o ${obj}.tmp
    COMMAND ${FNMESH_BPFTOOL} gen object ${obj} ${obj}.tmp
    DEPENDS ${src} ${FNMESH_VMLINUX_H} fnmesh_vmlinux_h
    DEPFILE ${obj}.d
    COMMENT "Compiling BPF ${A_SRC}"
    VERBATIM)
  add_custom_command(OUTPUT ${skel}
    COMMAND sh -c "'${FNMESH_BPFTOOL}' gen skeleton '${obj}' name ${A_NAME}_bpf > '${skel}.tmp'"
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "Generating BPF skeleton ${A_NAME}.skel.h"
    VERBATIM)
  add_custom_target(fnmesh_bpf_${A_NAME}_skel DEPENDS ${skel})
endfunction()
