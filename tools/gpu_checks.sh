#!/usr/bin/env bash
# On a machine with a CUDA GPU: builds mdi-llm for that GPU (build-gpu/), runs every test (the
# CUDA op, model and MPI tests included, which skip on machines without a GPU), the CUDA tests
# under compute-sanitizer (memcheck, racecheck) and the CUDA benchmarks. Full logs go to $OUT
# (default ./gpu-out); a summary is printed. Steps, default all of them:
#   tools/gpu_checks.sh [build] [test] [sanitize] [bench]
# Env: CUDAARCHS (default native), MDI_DEPS_DIR (headers of CLI11 / nlohmann / fmt where the
# machine lacks the packages; default ./.gpu-deps if present), JOBS, SAN_TIMEOUT (s per tool),
# SAN_TOOLS (default "memcheck racecheck"; initcheck also flags reads of what cuBLAS wrote on
# Hopper, seen 2026-12-01), SAN_FILTER (gtest filter, default Cuda*). On an H100 memcheck over all
# CUDA tests takes seconds, racecheck about 6 minutes (the 3 persistent-kernel tests 42-44 s each).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build test sanitize bench)
has() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
jobs=${JOBS:-$(nproc)}
deps=${MDI_DEPS_DIR:-}
[ -z "$deps" ] && [ -d .gpu-deps ] && deps=$PWD/.gpu-deps
rc=0

if has build; then
  t0=$(date +%s)
  if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_CUDA_ARCHITECTURES="${CUDAARCHS:-native}" ${deps:+-DMDI_DEPS_DIR="$deps"} \
       >"$out/configure.log" 2>&1; then
    tail -n 40 "$out/configure.log"
    exit 1
  fi
  grep -E '^-- mdi-llm' "$out/configure.log"
  if ! cmake --build build-gpu -j "$jobs" >"$out/build.log" 2>&1; then
    grep -E -B2 -A8 'error' "$out/build.log" | head -n 80
    exit 1
  fi
  echo "build: ok in $(( $(date +%s) - t0 )) s; warnings: $(grep -c -i 'warning' "$out/build.log")"
fi

if has test; then
  t0=$(date +%s)
  ctest --test-dir build-gpu --output-on-failure -j 4 >"$out/ctest.log" 2>&1
  r=$?
  [ $r -eq 0 ] || rc=1
  echo "ctest: rc $r in $(( $(date +%s) - t0 )) s"
  grep -E 'tests passed|tests failed|\(Failed\)|\(Skipped\)|Not Run' "$out/ctest.log" | head -n 40
  grep -E '\[ figure \]' "$out/ctest.log" | head -n 20
  # The CUDA MPI test skips (77) where mdi-llm cannot use the GPU: show why.
  if grep -q 'mpi_cuda_same_tokens .*Skipped' "$out/ctest.log"; then
    ctest --test-dir build-gpu -R mpi_cuda_same_tokens -V 2>&1 | grep -E 'SKIP|error' | head -n 5
  fi
fi

if has sanitize; then
  for tool in ${SAN_TOOLS:-memcheck racecheck}; do
    t0=$(date +%s)
    timeout "${SAN_TIMEOUT:-300}" compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 \
      build-gpu/tests/cuda_tests --gtest_filter="${SAN_FILTER:-Cuda*}" >"$out/sanitize-$tool.log" 2>&1
    r=$?
    [ $r -eq 0 ] || rc=1
    [ $r -eq 124 ] && echo "compute-sanitizer $tool: stopped after SAN_TIMEOUT=${SAN_TIMEOUT:-300} s, in" \
      "$(grep -E '^\[ RUN' "$out/sanitize-$tool.log" | tail -n 1 | cut -c 14-) (raise SAN_TIMEOUT or narrow SAN_FILTER)"
    echo "compute-sanitizer $tool: rc $r in $(( $(date +%s) - t0 )) s;" \
         "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitize-$tool.log" | tail -n 1);" \
         "$(grep -E '^\[  (PASSED|FAILED)  \]' "$out/sanitize-$tool.log" | tr '\n' ' ')"
  done
fi

if has bench; then
  build-gpu/tests/cuda_tests --gtest_also_run_disabled_tests --gtest_filter='CudaBench.*' \
    >"$out/bench.log" 2>&1 || rc=1
  grep -E '\[ figure \]|FAILED' "$out/bench.log"
fi
exit $rc
