#!/usr/bin/env bash
# The CPU kernels on the Jetsons' architecture: tests/test_ops.cpp and src/cpu/ops.cpp built for
# aarch64 (NEON: the fma and float16 paths of src/cpu/ops.cpp) with Debian's cross compiler and run
# under qemu-user, so every op test, the fixed reduction order and float16 weights against their
# widening included, holds there too. GoogleTest comes from its Debian sources. Exit 77 (ctest:
# skipped) without aarch64-linux-gnu-g++, qemu-aarch64 or /usr/src/googletest.
#   arm_ops.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
skip() { echo "SKIP: $*"; exit 77; }
cxx=aarch64-linux-gnu-g++
gtest=/usr/src/googletest/googletest
command -v "$cxx" >/dev/null || skip "no $cxx (Debian: g++-aarch64-linux-gnu)"
command -v qemu-aarch64 >/dev/null || skip "no qemu-aarch64 (Debian: qemu-user)"
[ -f "$gtest/src/gtest-all.cc" ] || skip "no GoogleTest sources in $gtest (Debian: googletest)"
mkdir -p "$work"
for f in gtest-all gtest_main; do  # built once per build folder
  [ -f "$work/$f.o" ] || "$cxx" -std=c++17 -O2 -I"$gtest/include" -I"$gtest" -c "$gtest/src/$f.cc" -o "$work/$f.o"
done
# Static, so that qemu needs no aarch64 libraries (the linker warns about glibc's dlopen: harmless).
"$cxx" -std=c++17 -O2 -fopenmp -Wall -Wextra -I"$src/include" -I/usr/include/eigen3 -I"$gtest/include" \
  "$src/tests/test_ops.cpp" "$src/src/cpu/ops.cpp" "$work/gtest-all.o" "$work/gtest_main.o" \
  -static -o "$work/test_ops_aarch64" -lpthread
qemu-aarch64 "$work/test_ops_aarch64"
