#!/usr/bin/env bash
# One-command set-up for Debian 12: installs the packages mdi-llm needs (as root), configures and
# builds in ./build, then either runs the demo (`run`: 3 ranks on the bundled model) or every test
# (`test`: unit, model and MPI tests through ctest). `build` stops after building.
#   tools/setup.sh run | test | build
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
case "$what" in run|test|build) ;; *) echo "usage: $0 run|test|build" >&2; exit 2 ;; esac

packages=(build-essential cmake ninja-build pkg-config libopenmpi-dev openmpi-bin libhdf5-dev
          libeigen3-dev libcli11-dev nlohmann-json3-dev libfmt-dev libgtest-dev libgmock-dev python3
          shellcheck iproute2 procps)
# Debian's Python with torch, h5py and numpy: the .pt / .bin conversions (tools/convert_pickle.py)
# and their tests, the fixture and training scripts.
[ "$what" = run ] || packages+=(python3-torch python3-h5py python3-numpy)
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
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"

# Open MPI refuses root unless told; oversubscribe so tests and the demo run on small machines.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
case "$what" in
  test)
    ctest --test-dir build --output-on-failure -j "$jobs"
    ;;
  run)
    mpirun -np 3 --oversubscribe --mca mpi_yield_when_idle 1 build/mdi-llm \
      --model data/shakespeare_char.h5 --prompt "ROMEO:" --samples 3 --tokens 300
    ;;
esac
