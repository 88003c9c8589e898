#!/usr/bin/env bash
# mdi-llm --tokenize / --detokenize: decode(encode(x)) == x through the CLI, for the character
# tokenizer (a fixture), the byte-level BPE (a tiny HF GPT-2 fixture converted by mdi-convert) and
# a BPE trained by mdi-train-bpe, the BPEs on arbitrary bytes, invalid UTF-8 included; bad ids are
# refused. The trained tokenizer also goes into models (mdi-convert --tokenizer, --into) that run.
# Without --model, mdi-llm runs the bundled model.
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
# A text-trained BPE: tokenizer-only file, round trip, into a random model that generates, refused
# by a model whose vocabulary is too small (which stays as it was).
train=$(dirname "$llm")/mdi-train-bpe
for i in $(seq 40); do echo "Nel mezzo del cammin di nostra vita mi ritrovai per una selva oscura $i"; done >"$tmp/corpus.txt"
"$train" -q --text "$tmp/corpus.txt" --merges 200 -o "$tmp/tok.h5"
roundtrip "$tmp/tok.h5" "$tmp/bytes.txt" "text-trained BPE on arbitrary bytes"
roundtrip "$tmp/tok.h5" "$tmp/corpus.txt" "text-trained BPE on its corpus"
if "$convert" -q --random 2,2,32,32,512 --tokenizer "$tmp/tok.h5" -o "$tmp/bpe_model.h5" &&
   "$llm" --model "$tmp/bpe_model.h5" --prompt "Nel mezzo" --tokens 8 --samples 1 >"$tmp/gen" 2>&1 &&
   grep -q "^Nel mezzo" "$tmp/gen"; then
  echo "ok   a model with the trained tokenizer generates"
else
  echo "FAIL a model with the trained tokenizer"; cat "$tmp/gen"; fail=1
fi
cp "$fixtures/tiny_gpt2.h5" "$tmp/small.h5"
if "$train" -q --text "$tmp/corpus.txt" --merges 200 --into "$tmp/small.h5" 2>"$tmp/err" ||
   ! cmp -s "$fixtures/tiny_gpt2.h5" "$tmp/small.h5"; then
  echo "FAIL --into a model with a smaller vocabulary was accepted or changed the file"; fail=1
else
  echo "ok   --into refused: $(cat "$tmp/err")"
fi
if "$llm" --model "$tmp/tok.h5" --prompt x >/dev/null 2>"$tmp/err"; then
  echo "FAIL generation from a tokenizer-only file"; fail=1
else
  echo "ok   generation from a tokenizer-only file refused: $(grep error "$tmp/err")"
fi
# No --model: the bundled model, the same text as when it is named.
bundled=$(cd "$fixtures/../.." && pwd)/data/shakespeare_char.h5
if "$llm" --prompt "ROMEO:" --tokens 40 --samples 1 --seed 7 >"$tmp/default" 2>"$tmp/err" &&
   "$llm" --model "$bundled" --prompt "ROMEO:" --tokens 40 --samples 1 --seed 7 >"$tmp/named" 2>/dev/null &&
   cmp -s "$tmp/default" "$tmp/named" && grep -q "^ROMEO:" "$tmp/default"; then
  echo "ok   without --model, the bundled model generates"
else
  echo "FAIL without --model"; cat "$tmp/err"; fail=1
fi
exit $fail
