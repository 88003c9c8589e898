#!/usr/bin/env bash
# The figures measured on the GPU machine, after tools/gpu_checks.sh build: the Hugging Face
# fixture remade with transformers (tests/fixtures/hf_tiny*), mdi-llm against transformers on a
# random GPT-2 XL-shaped checkpoint (tools/compare_hf.py), and the CPU pipeline sweep on the
# machine's cores, one core per rank (tools/bench_sweep.py). Outputs go to $OUT (default
# ./gpu-out) as a few files. Needs GPT-2's encoder.json + vocab.bpe in $GPT2_VOCAB. The sweep also
# runs each split in SPLITS (e.g. SPLITS="2,5,5 1,4,4,3"), as bench_sweep.py --split.
#   GPT2_VOCAB=DIR tools/gpu_figures.sh [fixture] [compare] [sweep]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-$PWD/gpu-out}
vocab=${GPT2_VOCAB:?set GPT2_VOCAB to a folder with encoder.json and vocab.bpe}
build=${BUILD:-build-gpu}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(fixture compare sweep)
has() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
rc=0

if has fixture; then
  fx=$(mktemp -d)
  python3 tools/make_hf_fixture.py --hf-only --out "$fx" | tail -n 1 || rc=1
  tar -C "$fx" -cf "$out/hf_fixture.tar" . && rm -rf "$fx"
fi

if has compare; then
  timeout "${COMPARE_TIMEOUT:-420}" python3 tools/compare_hf.py --build "$build" --gpt2-vocab "$vocab" \
    --out "$out" --shape "${SHAPE:-gpt2-xl}" --bench-tokens "${BENCH_TOKENS:-128}" || rc=1
fi

if has sweep; then
  model=/tmp/mdi-sweep-gpt2.h5
  "$build/mdi-convert" --random gpt2 --gpt2-vocab "$vocab" -o "$model" -q || rc=1
  sw=$(mktemp -d)
  split_args=()
  for s in ${SPLITS:-}; do split_args+=(--split "$s"); done
  # One core per rank: each rank bound to its own core, one thread.
  timeout "${SWEEP_TIMEOUT:-150}" python3 tools/bench_sweep.py --bin "$build/mdi-llm" --model "$model" \
    --ranks "${RANKS:-1,2,3,4}" "${split_args[@]}" --tokens "${SWEEP_TOKENS:-64}" --threads 1 --repeat "${SWEEP_REPEAT:-2}" \
    --mpirun-flags "--allow-run-as-root --bind-to core --map-by core" --out "$sw/sweep_1core.csv" \
    >"$sw/sweep.txt" 2>&1 || rc=1
  tail -n 8 "$sw/sweep.txt"
  python3 -c 'import csv, sys
for r in [r for f in sys.argv[1:] for r in csv.DictReader(open(f))]:
    print("ranks", r["ranks"], "samples", r["samples"], "split", r["split"], "tokens/s", r["tokens_per_s"],
          "efficiency", r["pipeline_efficiency"], "busy", r["busy_fraction"], r["status"])' \
    "$sw/sweep_1core.csv"
  tar -C "$sw" -cf "$out/sweep.tar" . && rm -rf "$sw" "$model"
fi
exit $rc
