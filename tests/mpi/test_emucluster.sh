#!/usr/bin/env bash
# mdi-llm on 3 emulated hosts (tools/emucluster.sh: network namespaces, 1 Gbit/s veth links, mpirun
# over TCP as on real boards) gives the token ids of a plain single-process run, and its messages
# really crossed the emulated links. Exit 77 (skipped) when not root or without network namespaces.
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

# Reference: one process, no mpirun.
if ! "$exe" "${flags[@]}" --output "$tmp/ref.jsonl" >"$tmp/ref.out" 2>"$tmp/ref.err"; then
  echo "FAIL: the single-process run failed"; tail -20 "$tmp/ref.err"; exit 1
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

python3 - "$tmp/ref.jsonl" "$tmp/emu.jsonl" <<'EOF'
import json, sys
def tokens(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    return [r["tokens"] for r in sorted(rows, key=lambda r: r["id"])]
ref, got = tokens(sys.argv[1]), tokens(sys.argv[2])
print(f"     {len(ref)} samples, {sum(map(len, ref))} tokens in the reference")
sys.exit(0 if len(ref) == 3 and ref == got else 1)
EOF
check $? "3 emulated hosts: token ids equal to the single-process run"

# Every rank's activations reached it through its emulated link: at least 40 decode steps of
# 3 samples x C=64 floats per host (the tiny model), plus the launch traffic.
for ((i = 1; i < N; i++)); do
  sent=$(($(to_host "$i") - before[i]))
  [ "$sent" -ge $((40 * 3 * 64 * 4)) ]
  check $? "host $i received $sent bytes over its emulated link"
done

echo "emucluster: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
