#!/usr/bin/env python3
"""Writes the small HDF5 inputs of fuzz_h5 (tests/fuzz): two seed models of a few KB (char and
byte-level BPE tokenizer; small seeds mutate much faster than the fixtures) and the regression
inputs, each a file that once made the loader size an allocation from a number it had not checked.
Deterministic; run from the repository root with a Python that has numpy and h5py:

    /usr/bin/python3 tests/fuzz/make_h5_inputs.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import mdi_h5  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus", "fuzz_h5")
REGRESSIONS = os.path.join(HERE, "regressions", "fuzz_h5")
CFG = dict(model_type="gpt2", n_layer=1, n_head=1, n_embd=4, block_size=4, vocab_size=4, bias=True)


def tiny(path, tokenizer, cfg=CFG):
    mdi_h5.write_model(path, cfg, dict(mdi_h5.iter_random_tensors(mdi_h5.check_config(cfg), 7)),
                       tokenizer)


def bpe_tokenizer():
    """256 byte tokens and two merges ("a" + "b", "ab" + "c"); vocab_size 258."""
    vocab = [bytes([b]) for b in range(256)] + [b"ab", b"abc"]
    merges = np.array([[ord("a"), ord("b")], [256, ord("c")]], dtype=np.int32)
    return {"type": "gpt2-bpe", "vocab": vocab, "merges": merges}


def replace(path, name, shape, dtype):
    """Replaces dataset `name` by one of `shape` whose storage is never written (fill values)."""
    with mdi_h5.h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, shape=shape, dtype=dtype, track_times=False)


def main():
    os.makedirs(CORPUS, exist_ok=True)
    os.makedirs(REGRESSIONS, exist_ok=True)
    char = {"type": "char", "vocab": list("ab\ncd")[:4]}
    tiny(os.path.join(CORPUS, "tiny_char.h5"), char)
    tiny(os.path.join(CORPUS, "tiny_bpe.h5"), bpe_tokenizer(), dict(CFG, vocab_size=258))

    # n_embd 65536, vocab_size 2^24 in the attributes: load_weights sized 5 TB before it looked at
    # a single dataset (std::bad_alloc, reported as "out of memory").
    p = os.path.join(REGRESSIONS, "huge_attributes.h5")
    tiny(p, char)
    with mdi_h5.h5py.File(p, "r+") as f:
        f.attrs["n_embd"] = np.int64(65536)
        f.attrs["vocab_size"] = np.int64(1 << 24)
    # /wte of shape (2^24, 4), never written, vocab_size to match: 256 MB of fill values loaded.
    p = os.path.join(REGRESSIONS, "unstored_wte.h5")
    tiny(p, char)
    with mdi_h5.h5py.File(p, "r+") as f:
        f.attrs["vocab_size"] = np.int64(1 << 24)
    replace(p, "wte", (1 << 24, 4), "f4")
    # /tokenizer/offsets of 2^31 entries, never written: 16 GB allocated before the offsets' check.
    p = os.path.join(REGRESSIONS, "unstored_offsets.h5")
    tiny(p, char)
    replace(p, "tokenizer/offsets", (1 << 31,), "i8")
    # /tokenizer/merges of shape (2^29, 2), never written: 4 GB + 4 GB for the merges table.
    p = os.path.join(REGRESSIONS, "unstored_merges.h5")
    tiny(p, bpe_tokenizer(), dict(CFG, vocab_size=258))
    replace(p, "tokenizer/merges", (1 << 29, 2), "i4")
    # BPE offsets that increase up to an entry past the end of vocab, then fall back: only each
    # step was checked, so token 255 was read from 38 bytes beyond the vocab buffer (ASan:
    # heap-buffer-overflow; fuzz_h5 found it with an offset of 2^48: a 256 TB std::string).
    p = os.path.join(REGRESSIONS, "bpe_offset_past_vocab.h5")
    tiny(p, bpe_tokenizer(), dict(CFG, vocab_size=258))
    with mdi_h5.h5py.File(p, "r+") as f:
        offsets = f["tokenizer/offsets"][:]
        offsets[256] = 300
        f["tokenizer/offsets"][:] = offsets


if __name__ == "__main__":
    main()
