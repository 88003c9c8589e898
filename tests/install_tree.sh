#!/usr/bin/env bash
# `cmake --install`: the installed tree, moved after installing, runs on its own. Its executables
# find their libraries and the CUDA plugin through RUNPATHs relative to themselves (none names the
# build or the source tree), and the bundled model and mdi-convert's Python helper in its
# share/mdi-llm; it generates the build's tokens, with 1 rank and with 2.
#   install_tree.sh BUILD_DIR SOURCE_DIR FIXTURES MPIEXEC
set -euo pipefail
build=$1 src=$2 fixtures=$3 mpiexec=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
loaded() {  # LOG LIB: where the process of an LD_DEBUG=files log loaded LIB from, links resolved
  local f
  f=$(sed -n "s/.*calling init: \(.*\/$2\)\$/\1/p" "$1" | head -n 1)
  [ -n "$f" ] && realpath "$f"
}
default_is() {  # EXE OPTION FILE: EXE's --help shows FILE as OPTION's default (CLI11 2.1:
  "$p/bin/$1" --help >"$tmp/help.txt"  # `--model TEXT=FILE`; 2.4: `--model TEXT [FILE]`)
  if grep -E -- "^ *$2 TEXT" "$tmp/help.txt" | grep -q -E -e "=$3\$" -e "\[$3\] *\$"; then
    ok "$1 $2 defaults to the installed $(basename "$3")"
  else
    bad "$1 --help: $(grep -- "$2 TEXT" "$tmp/help.txt")"
  fi
}

if ! cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"; exit 1
fi
mv "$tmp/prefix" "$tmp/moved"
p=$tmp/moved
libdir=$(find "$p" -name 'libmdi_core.so' -printf '%h\n' | head -n 1)  # CUDA builds only

for f in bin/mdi-llm bin/mdi-convert bin/mdi-train-bpe bin/mdi-logits \
         share/mdi-llm/shakespeare_char.h5 share/mdi-llm/convert_pickle.py; do
  [ -f "$p/$f" ] || bad "not installed: $f"
done
objects=("$p"/bin/*)
[ -n "$libdir" ] && objects+=("$libdir"/*.so)
for o in "${objects[@]}"; do
  if readelf -d "$o" | grep -E 'R(UN)?PATH' | grep -q -e "$build" -e "$src"; then
    bad "$(basename "$o")'s RUNPATH names the build or source tree: $(readelf -d "$o" | grep -E 'R(UN)?PATH')"
  fi
done
ok "installed: ${#objects[@]} executables and libraries, no RUNPATH into the build or source tree"

# The bundled model is the installed copy; run away from both trees.
default_is mdi-llm --model "$p/share/mdi-llm/shakespeare_char.h5"
run=(--prompt "ROMEO:" --samples 2 --tokens 40 --temperature 0)
"$build/mdi-llm" --model "$src/data/shakespeare_char.h5" "${run[@]}" >"$tmp/build.txt" 2>/dev/null
(cd "$tmp" && LD_DEBUG=files "$p/bin/mdi-llm" "${run[@]}" >"$tmp/one.txt" 2>"$tmp/one.log")
(cd "$tmp" && "$mpiexec" -np 2 --oversubscribe --mca mpi_yield_when_idle 1 \
   "$p/bin/mdi-llm" "${run[@]}" >"$tmp/two.txt" 2>"$tmp/two.log")
if [ -s "$tmp/build.txt" ] && cmp -s "$tmp/build.txt" "$tmp/one.txt" && cmp -s "$tmp/build.txt" "$tmp/two.txt"; then
  ok "the installed mdi-llm, 1 and 2 ranks, gives the build's tokens ($(wc -c <"$tmp/build.txt") bytes)"
else
  bad "the installed mdi-llm's samples differ from the build's"; tail -n 5 "$tmp/two.log"
fi
if [ -n "$libdir" ]; then
  if [ "$(loaded "$tmp/one.log" libmdi_core.so)" = "$libdir/libmdi_core.so" ]; then
    ok "libmdi_core.so is the installed one"
  else
    bad "libmdi_core.so loaded from $(loaded "$tmp/one.log" libmdi_core.so), not $libdir"
  fi
  # --device cuda loads the installed plugin; it then runs, or (no GPU) says so.
  rc=0
  LD_DEBUG=files "$p/bin/mdi-llm" --model "$fixtures/tiny_gpt2.h5" --tokens 2 --temperature 0 \
    --device cuda >/dev/null 2>"$tmp/gpu.log" || rc=$?
  if [ "$(loaded "$tmp/gpu.log" libmdi_cuda.so)" != "$libdir/libmdi_cuda.so" ]; then
    bad "--device cuda did not load $libdir/libmdi_cuda.so"
  elif [ $rc -ne 0 ] && ! grep -q '^mdi-llm: error: --device cuda: no CUDA device is visible' "$tmp/gpu.log"; then
    bad "--device cuda: exit $rc: $(grep 'mdi-llm' "$tmp/gpu.log" | head -n 3)"
  else
    ok "--device cuda loads the installed plugin (exit $rc$([ $rc -ne 0 ] && echo ': no GPU here'))"
  fi
fi

# mdi-convert's Python helper: the installed copy, used where Python has torch.
default_is mdi-convert --helper "$p/share/mdi-llm/convert_pickle.py"
if "${MDI_PYTHON:-python3}" -c "import torch" 2>/dev/null; then  # the Python mdi-convert runs
  if "$p/bin/mdi-convert" -q --nanogpt "$fixtures/nanogpt_tiny/ckpt.pt" -o "$tmp/nano.h5" &&
     "$p/bin/mdi-llm" --model "$tmp/nano.h5" --tokens 4 --samples 1 >/dev/null 2>&1; then
    ok "the installed mdi-convert reads a nanoGPT checkpoint through its helper"
  else
    bad "the installed mdi-convert on a nanoGPT checkpoint"
  fi
else
  echo "skip nanoGPT conversion: no Python with torch"
fi
for t in mdi-train-bpe mdi-logits; do
  "$p/bin/$t" --help >/dev/null || bad "$t --help"
done
exit $fail
