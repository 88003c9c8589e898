#!/usr/bin/env bash
# Output that cannot be written (a full disk: /dev/full) is one error line and exit status 1, never
# a silent success, and what can still be written is: samples that standard output did not take
# are in --output, and a failed --output does not keep --timings or the samples on stdout from
# being written. An output file whose first bytes cannot be written fails before generation.
#   write_errors.sh MDI_LLM MPIEXEC
set -euo pipefail
llm=$1 mpiexec=$2
[ -w /dev/full ] || { echo "skip: no /dev/full"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
gen=(--prompt "ROMEO:" --prompt "JULIET:" --samples 3 --tokens 30 --seed 7)

# expect NAME RC PATTERN: the last run (its exit status RC, its stderr in $tmp/err) failed with
# exactly one error line, matching PATTERN.
expect() {
  local lines
  lines=$(grep -c '^mdi-llm: error:' "$tmp/err" || true)
  if [ "$2" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "^mdi-llm: error: $3" "$tmp/err"; then
    echo "ok   $1: $(grep '^mdi-llm: error:' "$tmp/err")"
  else
    echo "FAIL $1: exit $2, $lines error lines:"; { grep -v '^ ' "$tmp/err" || true; } | head -n 5; fail=1
  fi
}
texts() { python3 -c 'import json,sys; [print(json.loads(l)["text"]) for l in open(sys.argv[1])]' "$1"; }

# The reference run, everything written.
"$llm" "${gen[@]}" --output "$tmp/ref.jsonl" --timings "$tmp/ref.csv" >"$tmp/ref.txt" 2>/dev/null

for mode in "" --stream; do
  rc=0
  "$llm" "${gen[@]}" $mode --output "$tmp/o.jsonl" >/dev/full 2>"$tmp/err" || rc=$?
  expect "samples on a full stdout${mode:+ ($mode)}" $rc "the samples: writing to standard output failed (No space left on device)"
  if [ "$(texts "$tmp/o.jsonl")" = "$(texts "$tmp/ref.jsonl")" ]; then
    echo "ok   ... and --output has all $(wc -l <"$tmp/o.jsonl") samples"
  else
    echo "FAIL ... and --output lacks samples"; fail=1
  fi
done

# --output on a full disk fails at the end (its check at the start writes nothing): the samples
# and --timings are still written. --timings and --report-json fail at the start, where their
# first bytes do not go out: nothing is generated.
rc=0
"$llm" "${gen[@]}" --output /dev/full --timings "$tmp/t.csv" >"$tmp/out.txt" 2>"$tmp/err" || rc=$?
expect "--output on a full disk" $rc "--output /dev/full: write failed (No space left on device)"
if cmp -s "$tmp/out.txt" "$tmp/ref.txt" && [ "$(wc -l <"$tmp/t.csv")" = "$(wc -l <"$tmp/ref.csv")" ]; then
  echo "ok   ... and the samples and --timings are written"
else
  echo "FAIL ... the samples or --timings were not written"; fail=1
fi
for flag in --timings --report-json; do
  rc=0
  "$llm" "${gen[@]}" "$flag" /dev/full >"$tmp/out.txt" 2>"$tmp/err" || rc=$?
  expect "$flag on a full disk" $rc "$flag /dev/full: write failed (No space left on device)"
  if [ -s "$tmp/out.txt" ] || grep -q '^generated' "$tmp/err"; then
    echo "FAIL ... after generating"; fail=1
  else
    echo "ok   ... before generating"
  fi
done

printf 'First Citizen:\nBefore we proceed any further, hear me speak.\n' >"$tmp/text.txt"
rc=0; "$llm" --eval "$tmp/text.txt" >/dev/full 2>"$tmp/err" || rc=$?
expect "--eval" $rc "--eval: writing to standard output failed"
rc=0; "$llm" --tokenize <"$tmp/text.txt" >/dev/full 2>"$tmp/err" || rc=$?
expect "--tokenize" $rc "--tokenize: writing to standard output failed"
rc=0; echo "1 2 3" | "$llm" --detokenize >/dev/full 2>"$tmp/err" || rc=$?
expect "--detokenize" $rc "--detokenize: writing to standard output failed"
for f in --help --version; do
  rc=0; "$llm" $f >/dev/full 2>"$tmp/err" || rc=$?
  expect "$f" $rc "writing to standard output failed"
done

# Two ranks: rank 0's failed write ends the job with an error, within seconds.
rc=0
timeout 60 "$mpiexec" -np 2 --oversubscribe --mca mpi_yield_when_idle 1 \
  "$llm" "${gen[@]}" --output /dev/full >/dev/null 2>"$tmp/err" || rc=$?
lines=$(grep -c '^mdi-llm: error:' "$tmp/err" || true)
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$lines" -eq 1 ] && grep -q '^mdi-llm: error: --output /dev/full: write failed' "$tmp/err"; then
  echo "ok   2 ranks, --output on a full disk: exit $rc, one error line"
else
  echo "FAIL 2 ranks, --output on a full disk: exit $rc, $lines error lines"; fail=1
fi
exit $fail
