#!/usr/bin/env bash
# mdi-convert and mdi-train-bpe on a disk that fills up (a file size limit, `ulimit -f`, stands in
# for a full disk or quota): one error line naming the file and the reason, exit status 1, and no
# output or partial file left behind, whether a tensor's write or the closing flush fails; a model
# whose tokenizer --into replaces stays as it was.
#   convert_write_errors.sh MDI_CONVERT MDI_TRAIN_BPE
set -euo pipefail
convert=$1 train=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# limited KIB NAME CMD...: runs CMD with files limited to KIB KiB (SIGXFSZ ignored, so that a write
# past the limit fails with EFBIG instead of killing the process), and checks the outcome.
limited() {
  local kib=$1 name=$2 rc=0 lines left
  shift 2
  (ulimit -f "$kib"; trap '' XFSZ; "$@") >/dev/null 2>"$tmp/err" || rc=$?
  lines=$(grep -c ': error:' "$tmp/err" || true)
  left=$(find "$tmp/out" -mindepth 1 | wc -l)
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -q 'writing .* failed (File too large)' "$tmp/err" && [ "$left" -eq 0 ]; then
    echo "ok   $name, $kib KiB: $(cat "$tmp/err")"
  else
    echo "FAIL $name, $kib KiB: exit $rc, $lines error lines, $left files left:"; head -n 3 "$tmp/err"; fail=1
  fi
  rm -rf "$tmp/out"; mkdir "$tmp/out"
}
mkdir "$tmp/out"

# under SIZE: the largest whole KiB limit below SIZE bytes, where the file's last bytes fail (with
# HDF5 1.10 on these files the flush at closing, one KiB less the last tensor's write).
under() { echo $(( ($(stat -c %s "$1") - 1) / 1024 )); }
model=(--random "4,4,128,64,65")  # L,NH,C,T,V
"$convert" -q "${model[@]}" -o "$tmp/full.h5"
for kib in 16 "$(under "$tmp/full.h5")" $(( $(under "$tmp/full.h5") - 1 )); do
  limited "$kib" "mdi-convert fp32" "$convert" -q "${model[@]}" -o "$tmp/out/m.h5"
done
"$convert" -q "${model[@]}" --dtype fp16 -o "$tmp/half.h5"
limited "$(under "$tmp/half.h5")" "mdi-convert fp16" "$convert" -q "${model[@]}" --dtype fp16 -o "$tmp/out/m.h5"

for i in $(seq 2000); do echo "the quick brown fox $i jumps over the lazy dog $((i * 7))"; done >"$tmp/corpus.txt"
"$train" -q --text "$tmp/corpus.txt" --merges 3000 -o "$tmp/tok.h5"
limited "$(under "$tmp/tok.h5")" "mdi-train-bpe" "$train" -q --text "$tmp/corpus.txt" --merges 3000 -o "$tmp/out/tok.h5"

# --into changes a copy of the model: where that fails, the model is as it was (it lost its
# tokenizer when it was changed in place), and no copy is left.
"$convert" -q --random 2,2,32,32,4500 -o "$tmp/out/m.h5"
"$train" -q --text "$tmp/corpus.txt" --merges 2000 --into "$tmp/out/m.h5"
before=$(md5sum <"$tmp/out/m.h5")
rc=0
(ulimit -f $(( $(stat -c %s "$tmp/out/m.h5") / 1024 + 1 )); trap '' XFSZ
 "$train" -q --text "$tmp/corpus.txt" --merges 4000 --into "$tmp/out/m.h5") 2>"$tmp/err" || rc=$?
if [ $rc -eq 1 ] && [ "$(grep -c ': error:' "$tmp/err")" -eq 1 ] && grep -q 'm.h5.partial failed (File too large)' "$tmp/err" &&
   [ "$(md5sum <"$tmp/out/m.h5")" = "$before" ] && [ ! -e "$tmp/out/m.h5.partial" ]; then
  echo "ok   mdi-train-bpe --into: the model unchanged: $(cat "$tmp/err")"
else
  echo "FAIL mdi-train-bpe --into: exit $rc, the model $([ "$(md5sum <"$tmp/out/m.h5")" = "$before" ] || echo changed):"
  cat "$tmp/err"; fail=1
fi
exit $fail
