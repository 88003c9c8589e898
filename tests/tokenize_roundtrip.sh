#!/usr/bin/env bash
# mdi-llm --tokenize / --detokenize: decode(encode(x)) == x through the CLI, for the character
# tokenizer (a fixture) and the byte-level BPE (a tiny HF GPT-2 fixture converted by mdi-convert),
# the latter on arbitrary bytes, invalid UTF-8 included; bad ids are refused.
#   tokenize_roundtrip.sh MDI_LLM MDI_CONVERT FIXTURES
set -euo pipefail
llm=$1 convert=$2 fixtures=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
roundtrip() {  # model, input file, name
  "$llm" --model "$1" --tokenize <"$2" >"$tmp/ids" && "$llm" --model "$1" --detokenize <"$tmp/ids" >"$tmp/back"
  if cmp -s "$2" "$tmp/back"; then echo "ok   $3 ($(wc -w <"$tmp/ids") ids)"; else echo "FAIL $3"; fail=1; fi
}
printf 'First Citizen:\nMa la città, perché? Un naïve — ok!' >"$tmp/char.txt"
roundtrip "$fixtures/tiny_gpt2.h5" "$tmp/char.txt" "char tokenizer"
"$convert" -q --hf "$fixtures/hf_tiny" -o "$tmp/bpe.h5"
printf "It's  a test\n\n\t 123 héllo 日本 \xf0\x9f\x98\x80 \xff\xfe\xc3 bad utf-8" >"$tmp/bytes.txt"
head -c 3000 /dev/urandom >>"$tmp/bytes.txt"
roundtrip "$tmp/bpe.h5" "$tmp/bytes.txt" "byte-level BPE on arbitrary bytes"
if echo "1 99999" | "$llm" --model "$tmp/bpe.h5" --detokenize >/dev/null 2>"$tmp/err"; then
  echo "FAIL an out-of-range id was accepted"; fail=1
else
  echo "ok   out-of-range id refused: $(cat "$tmp/err")"
fi
exit $fail
