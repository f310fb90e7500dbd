# install-cmake.cmake — writes the CMake package of an installed bips (run by
# bindings/c/install.sh after `cargo cinstall`, in CMake's script mode):
#
#   cmake -DPREFIX=<prefix> -DVERSION=<x.y.z> -P bindings/c/cmake/install-cmake.cmake
#
# Writes <prefix>/lib/cmake/bips/bipsConfig.cmake (from bipsConfig.cmake.in, with
# CMake's configure_package_config_file: relocatable, the prefix is found from the
# file's own location) and bipsConfigVersion.cmake (write_basic_package_version_file).
cmake_minimum_required(VERSION 3.16)
include(CMakePackageConfigHelpers)

foreach(var PREFIX VERSION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install-cmake.cmake: pass -D${var}=...")
  endif()
endforeach()

string(REGEX MATCH "^([0-9]+)\\.([0-9]+)\\.([0-9]+)" _ok "${VERSION}")
if(NOT _ok)
  message(FATAL_ERROR "install-cmake.cmake: VERSION '${VERSION}' is not MAJOR.MINOR.PATCH")
endif()
set(BIPS_MAJOR "${CMAKE_MATCH_1}")
set(BIPS_MINOR "${CMAKE_MATCH_2}")
# cargo-c's SONAME rule (bindings/c/Cargo.toml): libbips.so.0.MINOR before 1.0,
# libbips.so.MAJOR after. The same rule decides which versions are compatible:
# a 0.x request is met by the same 0.minor, a later one by the same major.
if(BIPS_MAJOR STREQUAL "0")
  set(BIPS_SOVERSION "0.${BIPS_MINOR}")
  set(_compat SameMinorVersion)
else()
  set(BIPS_SOVERSION "${BIPS_MAJOR}")
  set(_compat SameMajorVersion)
endif()

set(CMAKE_INSTALL_PREFIX "${PREFIX}")
set(_dir "${PREFIX}/lib/cmake/bips")
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/bipsConfig.cmake.in" "${_dir}/bipsConfig.cmake"
  INSTALL_DESTINATION "lib/cmake/bips")
# Script mode knows no compiler: say the pointer size so that the version file
# refuses a 32-bit project (sequences are 64-bit atomics).
set(CMAKE_SIZEOF_VOID_P 8)
write_basic_package_version_file("${_dir}/bipsConfigVersion.cmake"
  VERSION "${VERSION}" COMPATIBILITY ${_compat})
message(STATUS "bips ${VERSION}: CMake package in ${_dir} (SONAME libbips.so.${BIPS_SOVERSION})")
