#!/usr/bin/env bash
# A stop signal during generation (SIGUSR1, which mpirun forwards; SIGTERM from scancel or a time
# limit; SIGINT) ends the run within seconds with every sample written as far as it got: stop
# "interrupted" in --output, the same text on stdout, exit status 128 + the signal from rank 0,
# and tokens that begin like those of an uninterrupted run (1 rank and 3).
#   stop_signal.sh MDI_LLM MPIEXEC
set -euo pipefail
llm=$1 mpiexec=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
gen=(--prompt "ROMEO:" --prompt "JULIET:" --samples 4 --seed 11 --stream)
mpi=("$mpiexec" -np 3 --oversubscribe --mca mpi_yield_when_idle 1)

"$llm" "${gen[@]}" --tokens 200 --output "$tmp/ref.jsonl" >/dev/null 2>&1

# stopped NAME SIGNAL WANT_RC LAUNCHER...: runs a long generation, sends SIGNAL once text has come
# out, and checks what the run left.
stopped() {
  local name=$1 sig=$2 want=$3 pid rc=0 _
  shift 3
  rm -f "$tmp/out.txt" "$tmp/out.jsonl"
  "$@" "$llm" "${gen[@]}" --tokens 1000000 --output "$tmp/out.jsonl" >"$tmp/out.txt" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 300); do [ -s "$tmp/out.txt" ] && break; sleep 0.1; done
  sleep 0.3
  kill -s "$sig" $pid
  for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $pid 2>/dev/null; then
    echo "FAIL $name: still running 30 s after SIG$sig"; kill -9 $pid; fail=1; return
  fi
  wait $pid || rc=$?
  if python3 - "$tmp/out.jsonl" "$tmp/ref.jsonl" "$tmp/out.txt" <<'PY'
import json, sys
out = [json.loads(l) for l in open(sys.argv[1])]
ref = [json.loads(l) for l in open(sys.argv[2])]
text = open(sys.argv[3], encoding="utf-8", errors="replace").read()
assert len(out) == len(ref) == 4, f"{len(out)} samples written"
for o, r in zip(out, ref):
    assert o["stop"] == "interrupted", f"sample {o['id']}: stop {o['stop']}"
    n = min(len(o["tokens"]), len(r["tokens"]))
    assert n > 0 and o["tokens"][:n] == r["tokens"][:n], f"sample {o['id']}: tokens differ from the reference's"
    assert o["prompt"] + o["text"] in text, f"sample {o['id']}: its text is not on stdout"
PY
  then
    if [ $rc -eq "$want" ] && grep -q "^mdi-llm: stopped by SIG$sig: 4 samples ended early" "$tmp/err"; then
      echo "ok   $name: exit $rc, tokens $(python3 -c 'import json,sys; print(" ".join(str(len(json.loads(l)["tokens"])) for l in open(sys.argv[1])))' "$tmp/out.jsonl")"
    else
      echo "FAIL $name: exit $rc (want $want):"; grep '^mdi-llm' "$tmp/err"; fail=1
    fi
  else
    echo "FAIL $name: exit $rc"; grep '^mdi-llm' "$tmp/err" || true; fail=1
  fi
}

stopped "1 rank, SIGUSR1" USR1 138
stopped "1 rank, SIGTERM" TERM 143
stopped "1 rank, SIGINT" INT 130
# mpirun forwards SIGUSR1 at once; a SIGTERM it passes on about a second later and then ends the
# job with its own status, which is not 0.
stopped "3 ranks, SIGUSR1 to mpirun" USR1 138 "${mpi[@]}"
stopped "3 ranks, SIGTERM to mpirun" TERM 1 "${mpi[@]}"
exit $fail
