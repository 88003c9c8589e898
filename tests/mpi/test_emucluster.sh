#!/usr/bin/env bash
# mdi-llm on 3 emulated hosts (tools/emucluster.sh: network namespaces, 1 Gbit/s veth links, mpirun
# over TCP as on real boards) gives the token ids of a plain single-process run, and its messages
# really crossed the emulated links; on 10 Mbit/s links (a slow, congested network) a wider model
# (C = 768) runs slower but gives the same tokens again. Exit 77 (skipped) when not root or without
# network namespaces.
#   tests/mpi/test_emucluster.sh path/to/mdi-llm path/to/fixtures
set -uo pipefail

exe=${1:?usage: $0 MDI_LLM FIXTURES_DIR}
fixtures=${2:?usage: $0 MDI_LLM FIXTURES_DIR}
emu="$(cd "$(dirname "$0")/../.." && pwd)/tools/emucluster.sh"
model="$fixtures/tiny_gpt2.h5"
export MDI_EMU_PREFIX=mditest         # its own namespaces: mditest-sw, mditest-h0..h2
N=3

[ "$(id -u)" -eq 0 ] || { echo "skipped: the emulated cluster needs root"; exit 77; }
ip netns list >/dev/null 2>&1 || { echo "skipped: 'ip netns' is unavailable"; exit 77; }
[ -x "$exe" ] || { echo "FAIL: no executable $exe"; exit 1; }
[ -f "$model" ] || { echo "FAIL: no fixture $model"; exit 1; }

tmp=$(mktemp -d /tmp/mdi-emu-test.XXXXXX)
cleanup() { "$emu" down >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT

flags=(--model "$model" --prompt "First Citizen:" --temperature 0 --samples 3 --tokens 40 --threads 1)
# The wide model: GPT-2 124M's width (a decode row is 3 KB, a 64-token prefill 196 KB), 2 layers.
wide="$tmp/wide.h5"
if ! "$(dirname "$exe")/mdi-convert" -q --random 2,12,768,64,96 -o "$wide"; then
  echo "FAIL: mdi-convert --random failed"; exit 1
fi
wflags=(--model "$wide" --prompt "First Citizen: we are accounted poor citizens, the patricians good." \
        --crop-prompts --temperature 0.8 --top-k 20 --seed 77 --samples 3 --tokens 30 --threads 1)

# Reference: one process, no mpirun.
if ! "$exe" "${flags[@]}" --output "$tmp/ref.jsonl" >"$tmp/ref.out" 2>"$tmp/ref.err" ||
   ! "$exe" "${wflags[@]}" --output "$tmp/wref.jsonl" >"$tmp/wref.out" 2>"$tmp/wref.err"; then
  echo "FAIL: the single-process run failed"; tail -n 20 "$tmp/ref.err" "$tmp/wref.err"; exit 1
fi

"$emu" down >/dev/null 2>&1           # a cluster left by a killed earlier run
"$emu" up "$N" --rate 1gbit
rc=$?
[ "$rc" -ne 77 ] || { echo "skipped: cannot make the emulated cluster here"; exit 77; }
[ "$rc" -eq 0 ] || { echo "FAIL: emucluster up exited $rc"; exit 1; }

# Bytes the switch sent down to host i (its port's tx counter), read in the switch namespace.
to_host() { ip netns exec "$MDI_EMU_PREFIX-sw" cat "/sys/class/net/h$1/statistics/tx_bytes"; }
declare -a before
for ((i = 0; i < N; i++)); do before[i]=$(to_host "$i"); done

if ! timeout 240 "$emu" mpirun -- -np "$N" "$exe" "${flags[@]}" --output "$tmp/emu.jsonl" \
    >"$tmp/emu.out" 2>"$tmp/emu.err"; then
  echo "FAIL: mdi-llm on $N emulated hosts failed"; tail -40 "$tmp/emu.err"; exit 1
fi

passes=0 fails=0
check() {   # check STATUS MESSAGE: STATUS 0 = passed
  if [ "$1" -eq 0 ]; then echo "ok   $2"; passes=$((passes + 1)); else echo "FAIL $2"; fails=$((fails + 1)); fi
}

same_tokens() {  # same_tokens REF.jsonl GOT.jsonl
  python3 - "$1" "$2" <<'EOF'
import json, sys
def tokens(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    return [r["tokens"] for r in sorted(rows, key=lambda r: r["id"])]
ref, got = tokens(sys.argv[1]), tokens(sys.argv[2])
print(f"     {len(ref)} samples, {sum(map(len, ref))} tokens in the reference")
sys.exit(0 if len(ref) == 3 and ref == got else 1)
EOF
}
same_tokens "$tmp/ref.jsonl" "$tmp/emu.jsonl"
check $? "3 emulated hosts: token ids equal to the single-process run"

# Every rank's activations reached it through its emulated link: at least 40 decode steps of
# 3 samples x C=64 floats per host (the tiny model), plus the launch traffic.
for ((i = 1; i < N; i++)); do
  sent=$(($(to_host "$i") - before[i]))
  [ "$sent" -ge $((40 * 3 * 64 * 4)) ]
  check $? "host $i received $sent bytes over its emulated link"
done

# The wide model at 1 Gbit/s, then on 10 Mbit/s links: slower, the same tokens.
wide_run() {  # wide_run RATE: runs on the cluster that is up, prints the seconds
  local t0 t1
  t0=$(date +%s.%N)
  if ! timeout 240 "$emu" mpirun -- -np "$N" "$exe" "${wflags[@]}" --output "$tmp/wide-$1.jsonl" \
      >"$tmp/wide-$1.out" 2>"$tmp/wide-$1.err"; then
    echo "FAIL: the wide model on $N emulated hosts at $1 failed" >&2; tail -20 "$tmp/wide-$1.err" >&2
  fi
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
}
fast=$(wide_run 1gbit)
same_tokens "$tmp/wref.jsonl" "$tmp/wide-1gbit.jsonl"
check $? "wide model (C=768) on 1 Gbit/s links: token ids equal to the single-process run"
"$emu" down >/dev/null 2>&1
if "$emu" up "$N" --rate 10mbit; then
  slow=$(wide_run 10mbit)
  same_tokens "$tmp/wref.jsonl" "$tmp/wide-10mbit.jsonl"
  check $? "wide model on 10 Mbit/s links: token ids equal to the single-process run"
  echo "[ figure ] wide model, 3 hosts, 3 samples x 30 tokens: $fast s on 1 Gbit/s links, $slow s on 10 Mbit/s"
else
  check 1 "emucluster up --rate 10mbit"
fi

echo "emucluster: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
