#!/usr/bin/env bash
# One-command set-up for Debian 12: installs the packages mdi-llm needs (as root), configures and
# builds in ./build, then
#   run       the demo: 3 ranks generate 3 samples with the bundled model
#   test      every test: the unit, model and MPI tests (ctest) in ./build; the same suite built
#             with AddressSanitizer + UndefinedBehaviorSanitizer in ./build-asan; each libFuzzer
#             harness for 5 s (clang, ./build-fuzz). What CI runs (.ci/run); ~15 min on 2 cores
#   check     only the first part of `test` (~3 min)
#   sanitize  only the sanitizer part [extra ctest arguments]
#   fuzz      only the fuzz part [seconds per harness, default 5]
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
# and their tests, the fixture and training scripts.
[ "$what" = run ] || packages+=(python3-torch python3-h5py python3-numpy)
# clang with its sanitizer and libFuzzer runtimes: the fuzz harnesses (tools/fuzz.sh).
case "$what" in test|fuzz) packages+=(clang libclang-rt-14-dev) ;; esac
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

sanitize() {  # ASan + UBSan on every C/C++ object (no CUDA: it cannot run here), then the suite.
  # -g1: line tables only, enough for the sanitizers' file:line stacks, and a faster build than -g.
  local flags="-O2 -g1 -DNDEBUG"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMDI_SANITIZE=ON -DMDI_CUDA=OFF \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags"
  cmake --build build-asan -j "$jobs"
  ctest --test-dir build-asan --output-on-failure -j "$jobs" "$@"
}
fuzz() { tools/fuzz.sh build && tools/fuzz.sh run "${1:-5}"; }

case "$what" in
  sanitize) shift; sanitize "$@"; exit ;;
  fuzz) fuzz "${2:-5}"; exit ;;
esac

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"

case "$what" in
  check)
    ctest --test-dir build --output-on-failure -j "$jobs"
    ;;
  test)
    stage() { echo "setup: $1 done at $((SECONDS / 60)) min $((SECONDS % 60)) s"; }
    stage "install + build"
    ctest --test-dir build --output-on-failure -j "$jobs"
    stage "test suite"
    # Under the sanitizers all but four tests that add no C++ path of their own: bpe_vs_js (its
    # C++ side is the BPE encoder: unit tests and fuzz_bpe cover it), mpi_emulated_cluster (the
    # mpi_* tests run the same mdi-llm code), mpi_same_tokens_np2 and _np4 (np3 runs the same ring
    # code: rank 0, a first and a last worker); they cost ~5 of the sanitized suite's ~11 minutes.
    sanitize -E '^(bpe_vs_js|mpi_emulated_cluster|mpi_same_tokens_np2|mpi_same_tokens_np4)$'
    stage "sanitized build + suite"
    fuzz 5
    stage "fuzzing"
    ;;
  run)
    mpirun -np 3 --oversubscribe --mca mpi_yield_when_idle 1 build/mdi-llm \
      --model data/shakespeare_char.h5 --prompt "ROMEO:" --samples 3 --tokens 250
    ;;
esac
