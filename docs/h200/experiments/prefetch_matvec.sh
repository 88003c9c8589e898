#!/usr/bin/env bash
# On the GPU machine, from the repository root, with prefetch_matvec.patch applied (git apply
# docs/h200/experiments/prefetch_matvec.patch): builds, checks the prefetching kernel against the
# CPU (op test, whole model with it on, memcheck, racecheck), then times the GPT-2 XL fp16 decode
# step at 1 sample with it off and on (slot sizes 24 / 32 / 40 / 48 KiB; 48 leaves no room for a
# second block per SM, so it is the run without the overlap), with and without PDL, and the
# kernels alone. About 6 minutes on an H200. Plan and reasoning: docs/h200/README.md, "The next
# kernel's weights before the wait".
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
CUDAARCHS=${CUDAARCHS:-90} tools/gpu_checks.sh build || exit 1
t=build-gpu/tests/cuda_tests
echo "== op test"
$t --gtest_filter='*PrefetchMatvec*' 2>&1 | grep -E '\[ figure \]|FAILED|PASSED|SKIPPED|Failure' | tail -40
echo "== whole model with the prefetching kernel"
MDI_CUDA_PREFETCH=1 $t --gtest_filter='CudaModel*:CudaGreedy*' 2>&1 | grep -E 'FAILED|PASSED|Failure' | tail -8
for tool in memcheck racecheck; do
  echo "== compute-sanitizer $tool"
  timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 $t --gtest_filter='*PrefetchMatvec*/fp16' 2>&1 | tail -2
done
bench=(--gtest_also_run_disabled_tests --gtest_filter=CudaBench.DISABLED_DecodeStepGpt2XlFp16)
for cfg in "MDI_CUDA_PREFETCH=0" "MDI_CUDA_PREFETCH=1" "MDI_CUDA_PREFETCH=1 MDI_PF_SLOT_KB=32" \
           "MDI_CUDA_PREFETCH=1 MDI_PF_SLOT_KB=24" "MDI_CUDA_PREFETCH=1 MDI_PF_SLOT_KB=48" "MDI_CUDA_PREFETCH=0"; do
  echo "== decode step, $cfg"
  # shellcheck disable=SC2086  # $cfg holds several VAR=value words
  env $cfg MDI_BENCH_RUNS="1,1,1,0" $t "${bench[@]}" 2>&1 | grep -E 'decode step|FAILED'
done
echo "== decode step without PDL (layered, not persistent), prefetching kernel off / on"
for v in 0 1; do MDI_CUDA_PREFETCH=$v MDI_BENCH_RUNS="1,1,0,0,0" $t "${bench[@]}" 2>&1 | grep -E 'decode step|FAILED'; done
echo "== the kernels alone, off / on"
for v in 0 1; do
  MDI_CUDA_PREFETCH=$v $t --gtest_also_run_disabled_tests --gtest_filter=CudaBench.DISABLED_OpsGpt2XlFp16 2>&1 |
    grep -E 'CUDA cores.*B=1|lm_head'
done
