#!/bin/bash
# Builds and tests mdi-llm with an Ubuntu release's own packages, in a chroot: the userland of the
# Jetsons' JetPack (6: Ubuntu 22.04 "jammy"; 5: Ubuntu 20.04 "focal"), on an amd64 machine.
#
#   tools/distro_check.sh jammy           # packages, build (warnings shown), every ctest test
#   tools/distro_check.sh jammy --cuda    # also Ubuntu's nvcc (11.5): the CUDA backend and its tests
#                                         # compiled for the Jetsons (72;87; no GPU here to run them)
#   tools/distro_check.sh focal           # Ubuntu 20.04: its CMake (3.16) is too old, so this one
#                                         # borrows the jammy root's 3.22 (run jammy first), as a
#                                         # board takes `pip3 install cmake`; CLI11 is not packaged
#                                         # there, so the host's headers go in through MDI_DEPS_DIR
#   tools/distro_check.sh down [RELEASE]  # unmount (the roots stay in /var/tmp for the next run)
#
# Needs root, debootstrap and archive.ubuntu.com. The packages are not signature-checked (Debian
# has no Ubuntu keyring): a throwaway root for a build check, nothing more. The tests that need what
# a minimal root lacks skip with their message (node, qemu, network namespaces, PyTorch).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rel=${1:?"usage: $0 jammy|focal [--cuda] | down [RELEASE]"}
case $rel in jammy | focal | down) ;; *) echo "distro_check: $rel: expected jammy, focal or down" >&2; exit 2 ;; esac
cuda=0; [ "${2:-}" = --cuda ] && cuda=1
base=${MDI_DISTRO_DIR:-/var/tmp}

unmount() {  # root
  for m in src/shared tmp dev proc; do mountpoint -q "$1/$m" && umount -l "$1/$m"; done; true
}
if [ "$rel" = down ]; then
  for r in "$base"/mdi-distro-${2:-*}; do [ -d "$r" ] && unmount "$r"; done
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "distro_check: needs root (chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

root=$base/mdi-distro-$rel
packages=(g++ make ninja-build libopenmpi-dev openmpi-bin libhdf5-dev libeigen3-dev libfmt-dev
          nlohmann-json3-dev libgtest-dev libgmock-dev python3 python3-numpy python3-h5py)
[ "$rel" = focal ] || packages+=(cmake libcli11-dev)
[ $cuda = 1 ] && packages+=(nvidia-cuda-toolkit g++-9)

if [ ! -x "$root/usr/bin/apt-get" ]; then
  echo "== debootstrap $rel into $root"
  debootstrap --no-check-gpg --variant=minbase "$rel" "$root" http://archive.ubuntu.com/ubuntu >/dev/null
fi
echo "deb http://archive.ubuntu.com/ubuntu $rel main restricted universe multiverse" >"$root/etc/apt/sources.list"
echo 'APT::Get::AllowUnauthenticated "true"; Acquire::AllowInsecureRepositories "true";' \
  >"$root/etc/apt/apt.conf.d/99insecure"
cp /etc/hosts /etc/resolv.conf "$root/etc/"  # without the host's name Open MPI waits for DNS
trap 'unmount "$root"' EXIT
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
mountpoint -q "$root/tmp" || mount -t tmpfs tmpfs "$root/tmp"
mkdir -p "$root/src/main" "$root/src/shared"
mountpoint -q "$root/src/shared" || mount --bind "$here/../shared" "$root/src/shared"
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 bash -c "$1"; }

echo "== packages"
in_root "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${packages[*]} >/dev/null"

cmake=cmake; ctest=ctest; extra=""
if [ "$rel" = focal ]; then  # CMake 3.22 of the jammy root, its libraries beside it (patchelf)
  jroot=$base/mdi-distro-jammy
  [ -x "$jroot/usr/bin/cmake" ] || { echo "distro_check: focal borrows jammy's CMake: run jammy first" >&2; exit 1; }
  command -v patchelf >/dev/null || apt-get install -y -qq patchelf >/dev/null
  o=$root/opt/cmake; rm -rf "$o"; mkdir -p "$o/bin" "$o/lib" "$o/share"
  cp -a "$jroot"/usr/share/cmake-3.* "$o/share/"
  for b in cmake ctest; do
    cp "$jroot/usr/bin/$b" "$o/bin/"
    chroot "$jroot" ldd "/usr/bin/$b" | awk '/=>/ {print $3} /ld-linux/ {print $1}'
  done | sort -u | while read -r l; do chroot "$jroot" cat "$l" >"$o/lib/${l##*/}"; done
  chmod +x "$o"/lib/ld-linux-*
  for b in cmake ctest; do
    patchelf --set-interpreter "/opt/cmake/lib/$(cd "$o/lib" && ls ld-linux-*)" --force-rpath \
      --set-rpath /opt/cmake/lib "$o/bin/$b"
  done
  cmake=/opt/cmake/bin/cmake; ctest=/opt/cmake/bin/ctest
  mkdir -p "$root/opt/deps/include" && cp -a /usr/include/CLI "$root/opt/deps/include/"
  extra="-DMDI_DEPS_DIR=/opt/deps"
fi

echo "== source: the working tree of $here"
rm -rf "$root/src/main" && mkdir -p "$root/src/main"
(cd "$here" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$root/src/main"
in_root "echo; g++ --version | head -n 1; $cmake --version | head -n 1; \
  dpkg-query -W -f '\${Package} \${Version}\n' libopenmpi-dev libhdf5-dev libeigen3-dev libfmt-dev \
    nlohmann-json3-dev libgtest-dev 2>/dev/null; dpkg-query -W -f '\${Package} \${Version}\n' libcli11-dev 2>/dev/null || true"

build() {  # dir, what goes before cmake (environment), cmake flags: configure, build, warnings
  in_root "cd /src/main && $2 $cmake -S . -B $1 -G Ninja $3 >/tmp/cfg.log 2>&1 || { cat /tmp/cfg.log; exit 1; }; \
    grep -E '^-- mdi-llm' /tmp/cfg.log; $cmake --build $1 -j$(nproc) >/tmp/build.log 2>&1; r=\$?; \
    echo \"warnings: \$(grep -c 'warning:' /tmp/build.log)\"; grep -E 'warning:|error:|FAILED' /tmp/build.log | sort | uniq -c; \
    tail -n 1 /tmp/build.log; exit \$r"
}
rc=0
echo "== build (CPU)"
build build "" "-DMDI_CUDA=OFF $extra" || rc=1
echo "== ctest"
in_root "cd /src/main && $ctest --test-dir build -j$(nproc) >/tmp/ctest.log 2>&1; r=\$?; \
  sed -n '/tests passed/,\$p' /tmp/ctest.log; exit \$r" || rc=1

if [ $cuda = 1 ]; then
  # nvcc 11.5 cannot parse g++ 11's <functional> (std_function.h); JetPack 5 pairs CUDA 11.4 with g++ 9.
  echo "== build (CUDA $(in_root "nvcc --version | grep -o 'release [0-9.]*'"), host compiler g++-9)"
  build build-cuda CUDAHOSTCXX=g++-9 "$extra" || rc=1
fi
exit $rc
