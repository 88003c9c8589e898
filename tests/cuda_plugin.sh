#!/usr/bin/env bash
# The CUDA backend is a plugin (src/cuda/plugin.h): a CPU run of a CUDA build loads neither the CUDA
# runtime nor cuBLAS; --device cuda loads it; where it cannot be loaded, --device cuda is one
# clear error and exit 1. Registered only in CUDA builds.
#   cuda_plugin.sh MDI_LLM FIXTURES
set -euo pipefail
llm=$1 fixtures=$2
bin=$(dirname "$llm")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
model=(--model "$fixtures/tiny_gpt2.h5" --tokens 2 --temperature 0)

# glibc's loader names every library it loads (LD_DEBUG=files).
LD_DEBUG=files "$llm" "${model[@]}" >/dev/null 2>"$tmp/cpu.log"
if grep -E -q 'file=[^ ]*(libcublas|libcudart|libmdi_cuda)' "$tmp/cpu.log"; then
  echo "FAIL a CPU run loaded CUDA: $(grep -E -o 'file=[^ ]*(libcublas|libcudart|libmdi_cuda)[^ ]*' "$tmp/cpu.log" | sort -u | tr '\n' ' ')"
  fail=1
else
  echo "ok   a CPU run loads no CUDA library"
fi

# --device cuda loads the plugin, and with it cuBLAS; it then runs, or (no GPU) says so.
rc=0
LD_DEBUG=files "$llm" "${model[@]}" --device cuda >/dev/null 2>"$tmp/gpu.log" || rc=$?
if ! grep -E -q 'file=[^ ]*libmdi_cuda\.so' "$tmp/gpu.log" || ! grep -E -q 'file=[^ ]*libcublas' "$tmp/gpu.log"; then
  echo "FAIL --device cuda did not load libmdi_cuda.so and cuBLAS"; fail=1
elif [ $rc -ne 0 ] && ! grep -q '^mdi-llm: error: --device cuda: no CUDA device is visible' "$tmp/gpu.log"; then
  echo "FAIL --device cuda: exit $rc without the no-device error:"; grep 'mdi-llm' "$tmp/gpu.log" | head -n 3; fail=1
else
  echo "ok   --device cuda loads the plugin (exit $rc$([ $rc -ne 0 ] && echo ': no GPU here'))"
fi

# Without the plugin beside libmdi_core.so (a copy of both, found first through LD_LIBRARY_PATH).
cp "$llm" "$bin/libmdi_core.so" "$tmp/"
rc=0
LD_LIBRARY_PATH=$tmp "$tmp/$(basename "$llm")" "${model[@]}" --device cuda >/dev/null 2>"$tmp/none.log" || rc=$?
errors=$(grep -c '^mdi-llm: error:' "$tmp/none.log" || true)
if [ $rc -eq 1 ] && [ "$errors" -eq 1 ] &&
   grep -q "^mdi-llm: error: --device cuda: cannot load the CUDA backend: $tmp/libmdi_cuda.so" "$tmp/none.log"; then
  echo "ok   no plugin: $(grep '^mdi-llm: error:' "$tmp/none.log")"
else
  echo "FAIL no plugin: exit $rc, $errors error lines:"; cat "$tmp/none.log"; fail=1
fi
# ... and the same copy runs on the CPU.
if LD_LIBRARY_PATH=$tmp "$tmp/$(basename "$llm")" "${model[@]}" >/dev/null 2>&1; then
  echo "ok   no plugin: a CPU run works"
else
  echo "FAIL no plugin: a CPU run failed"; fail=1
fi
exit $fail
