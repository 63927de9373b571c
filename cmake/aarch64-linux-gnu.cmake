# Cross-compiling edge_rt for 64-bit ARM Linux with Debian's GNU toolchain (apt: g++-aarch64-linux-gnu):
#   cmake -S native -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# No -march here: the library targets plain Armv8-A and compiles its dotprod/i8mm kernels per file
# (native/CMakeLists.txt). ctest runs the test programs through qemu-aarch64 (apt: qemu-user); the CPU
# model comes from QEMU_CPU (e.g. cortex-a53, cortex-a76, max), the target's libraries from
# QEMU_LD_PREFIX (tools/cross_aarch64.sh sets both).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(EDGE_RT_CROSS_PREFIX aarch64-linux-gnu- CACHE STRING "Prefix of the cross compiler's programs")
set(CMAKE_C_COMPILER ${EDGE_RT_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${EDGE_RT_CROSS_PREFIX}g++)

# Debian installs the target's libc, libstdc++ and headers under /usr/aarch64-linux-gnu.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
