#!/usr/bin/env bash
# One-command set-up for Debian 12: installs the packages mdi-llm needs (as root), configures and
# builds in ./build, then
#   run       the demo: 3 ranks generate 3 samples with the bundled model
#   test      every test (ctest) in ./build: unit, model and MPI; then the unit tests, the fuzz
#             replays and two MPI tests again, built with AddressSanitizer + UndefinedBehaviorSanitizer
#             in ./build-asan. What CI runs (.ci/run); ~9 min on 2 cores
#   check     only the first part of `test` (~5 min)
#   sanitize  the whole suite under the sanitizers [extra ctest arguments] (~16 min)
#   fuzz      each libFuzzer harness (clang, ./build-fuzz) [seconds per harness, default 5]
#   build     stops after building
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
case "$what" in run|test|check|sanitize|fuzz|build) ;;
  *) echo "usage: $0 run|test|check|sanitize|fuzz|build" >&2; exit 2 ;;
esac

packages=(build-essential cmake ninja-build pkg-config libopenmpi-dev openmpi-bin libhdf5-dev
          libeigen3-dev libcli11-dev nlohmann-json3-dev libfmt-dev libgtest-dev libgmock-dev python3
          shellcheck iproute2 procps)
# Debian's Python with torch, h5py and numpy: the .pt / .bin conversions (tools/convert_pickle.py)
# and their tests, the fixture and training scripts; matplotlib: tools/plot_bench.py and its test.
[ "$what" = run ] || packages+=(python3-torch python3-h5py python3-numpy python3-matplotlib)
# The aarch64 cross compiler and qemu-user: the CPU kernels' tests on the Jetsons' architecture
# (tests/arm_ops.sh).
[ "$what" = run ] || packages+=(g++-aarch64-linux-gnu qemu-user)
# clang with its sanitizer and libFuzzer runtimes: the fuzz harnesses (tools/fuzz.sh).
[ "$what" = fuzz ] && packages+=(clang libclang-rt-14-dev)
# node + npm run the GPT-2 BPE reference test (gpt-3-encoder); many machines have them already.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc)
# Open MPI refuses root unless told; oversubscribe so tests and the demo run on small machines.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# ASan + UBSan on every C/C++ object (no CUDA: it cannot run here) in build-asan. -O1 -g1: the
# optimisation ASan's authors advise, and line tables only (the sanitizers' file:line stacks): the
# subset CI builds took 182 s at -O2 -g1 on 2 cores.
sanitized_build() {  # [targets...]
  local flags="-O1 -g1 -DNDEBUG"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMDI_SANITIZE=ON -DMDI_CUDA=OFF \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags"
  cmake --build build-asan -j "$jobs" ${1:+--target "$@"}
}
# The suite there, less bpe_vs_js (its C++ side is the BPE encoder: unit tests and fuzz_bpe cover
# it), mpi_emulated_cluster (the mpi_* tests run the same mdi-llm code), arm_ops_qemu (an aarch64
# build of its own) and the tests in $skip.
sanitized_suite() {
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -E "^(bpe_vs_js|mpi_emulated_cluster|arm_ops_qemu${skip:-})\$" "$@"
}
fuzz() { tools/fuzz.sh build && tools/fuzz.sh run "${1:-5}"; }

skip=""
case "$what" in
  sanitize) shift; sanitized_build && sanitized_suite "$@"; exit ;;
  fuzz) fuzz "${2:-5}"; exit ;;
esac

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"

# The MPI tests spend much of their time starting jobs, not computing: two at a time (each asks
# for 2 processors) keep both cores busy.
suite() { ctest --test-dir build --output-on-failure -j $((2 * jobs)); }
case "$what" in
  check)
    suite
    ;;
  test)
    stage() { echo "setup: $1 done at $((SECONDS / 60)) min $((SECONDS % 60)) s"; }
    stage "install + build"
    suite
    stage "test suite"
    # The sanitized part of CI (tools/setup.sh sanitize runs all of it, ~16 min): every unit and
    # model test, the fuzz replays, and of the MPI tests the two that cover the ring's roles in
    # little time (mpi_report_and_files: 3 ranks generating and writing every output;
    # mpi_kill_rank). It builds only what those run: not the tools, convert_tests (mdi-convert;
    # fuzz_replay_safetensors covers its reader) or cli_tokenize_roundtrip's programs.
    sanitized_build mdi-llm unit_tests dtls_probe dtls_probe_lib fuzz_{bpe,char,h5,safetensors,cli}_replay
    skip="|convert_tests_NOT_BUILT|cli_tokenize_roundtrip|convert_write_errors|mpi_same_tokens_np[0-9]|mpi_bad_input|mpi_long_run|mpi_bench_sweep"
    sanitized_suite
    stage "sanitized build + suite"
    ;;
  run)
    mpirun -np 3 --oversubscribe --mca mpi_yield_when_idle 1 build/mdi-llm \
      --model data/shakespeare_char.h5 --prompt "ROMEO:" --samples 3 --tokens 250
    ;;
esac
