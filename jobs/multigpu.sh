#!/usr/bin/env bash
# GPT-2 XL split over the GPUs of one host, one rank per GPU: ranks = 1, 2, 4 (those that fit),
# samples = ranks and 4 x ranks, 256 tokens each, fp16, greedy; over Open MPI's default transport
# (shared memory between ranks of a host), with TCP forced (`--mca btl tcp,self`, as boards on
# Ethernet), and CUDA-aware if this Open MPI has it. Per run: the report (tokens/s, per-rank
# compute / communication / idle); at the end a table with the speed-up over 1 GPU at the same
# samples, and whether every run's tokens equal the 1-GPU run's.
#   jobs/multigpu.sh            (env: MDI_BIN, MDI_CONVERT, MDI_MODEL, MDI_GPT2_VOCAB, MDI_OUT,
#                                MDI_TOKENS, MDI_RANKS, MDI_DEVICE, MDI_DTYPE, MDI_PROMPT)
# With MDI_DEVICE=cpu and a small model it runs on any machine (to try the script itself).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${MDI_BIN:-$here/build/mdi-llm}
convert=${MDI_CONVERT:-$(dirname "$bin")/mdi-convert}
out=${MDI_OUT:-$PWD/multigpu-$(date +%Y%m%dT%H%M%S)}
model=${MDI_MODEL:-$out/gpt2-xl-fp16.h5}
tokens=${MDI_TOKENS:-256}
device=${MDI_DEVICE:-cuda}
dtype=${MDI_DTYPE:-fp16}
prompt=${MDI_PROMPT:-The ring of boards}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

gpus=0
if [ "$device" = cuda ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "$gpus" -gt 0 ] || { echo "multigpu: no GPU visible (nvidia-smi -L)"; exit 1; }
fi
ranks_list=${MDI_RANKS:-}
if [ -z "$ranks_list" ]; then
  for n in 1 2 4; do [ "$device" != cuda ] || [ "$n" -le "$gpus" ] && ranks_list+="$n "; done
fi
if [ ! -f "$model" ]; then
  vocab=${MDI_GPT2_VOCAB:?no model: set MDI_MODEL, or MDI_GPT2_VOCAB (encoder.json + vocab.bpe) to make one}
  "$convert" --random gpt2-xl --gpt2-vocab "$vocab" --dtype fp16 -o "$model"
fi
transports=("default:" "tcp:--mca btl tcp,self")
if ompi_info --parsable --all 2>/dev/null | grep -q 'mpi_built_with_cuda_support:value:true'; then
  transports+=("cuda-aware:--mca btl smcuda,self")
fi

declare -A tps
run() {  # run TRANSPORT_NAME "MPIRUN FLAGS" RANKS SAMPLES
  local tag="$1-np$3-s$4"
  [ -z "${tps[$tag]:-}" ] || return 0
  local dev=(--device "$device")
  [ "$device" = cuda ] && dev+=(--dtype "$dtype")
  # shellcheck disable=SC2086  # $2 is a list of mpirun flags
  if ! mpirun --bind-to none -np "$3" $2 "$bin" --model "$model" "${dev[@]}" --prompt "$prompt" \
      --samples "$4" --tokens "$tokens" --temperature 0 --output "$out/$tag.jsonl" \
      --report-json "$out/$tag.json" >"$out/$tag.out" 2>"$out/$tag.err"; then
    echo "FAILED $tag"; tail -5 "$out/$tag.err"; return 0
  fi
  tps[$tag]=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["tokens_per_s"])' "$out/$tag.json")
  echo "$tag: ${tps[$tag]} tokens/s"
  grep -E '^(split|rank|  +[0-9])' "$out/$tag.err" | sed 's/^/    /'
}
# The 1-GPU baselines for every sample count used, then every transport x ranks x samples.
for n in $ranks_list; do for s in "$n" $((4 * n)); do run default "" 1 "$s"; done; done
for t in "${transports[@]}"; do
  for n in $ranks_list; do for s in "$n" $((4 * n)); do run "${t%%:*}" "${t#*:}" "$n" "$s"; done; done
done

echo
echo "transport ranks samples tokens/s speedup_vs_1gpu same_tokens_as_1gpu"
for t in "${transports[@]}"; do
  name=${t%%:*}
  for n in $ranks_list; do
    for s in "$n" $((4 * n)); do
      tag="$name-np$n-s$s" base="default-np1-s$s"
      [ -n "${tps[$tag]:-}" ] || continue
      ref=$out/$base.jsonl
      python3 - "$out/$tag.jsonl" "$ref" "$name" "$n" "$s" "${tps[$tag]}" "${tps[$base]:-0}" <<'PY'
import json, os, sys
got, ref, name, n, s, tp, base = sys.argv[1:8]
def toks(p):
    return [r["tokens"] for r in sorted((json.loads(l) for l in open(p)), key=lambda r: r["id"])] if os.path.exists(p) else None
same = toks(got) == toks(ref) and toks(ref) is not None
speed = float(tp) / float(base) if float(base) else float("nan")
print(f"{name} {n} {s} {float(tp):.1f} {speed:.2f} {'yes' if same else 'NO'}")
PY
    done
  done
done
