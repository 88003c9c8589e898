#!/usr/bin/env python3
"""Writes a Hugging Face GPT-2 directory with random fp32 weights, of any size, without
transformers: config.json, model.safetensors (Conv1D weights stored (in, out), as GPT-2's) and
the tokenizer files of VOCAB_DIR. What mdi-convert --hf reads, for timing the converter on the
large flavours (README, "Converting checkpoints") and for its test.

    tools/random_hf_gpt2.py gpt2-xl OUT_DIR --vocab DIR    # DIR: encoder.json + vocab.bpe
    tools/random_hf_gpt2.py 2,4,32,16,281 OUT_DIR --vocab tests/fixtures/hf_tiny  # L,NH,C,T,V

The values are normal(0, 0.02) draws of one 4M-value block repeated through every tensor, so
that a 6 GB file is written at disk speed; they are not a model anyone would run for its text.
Only numpy and the standard library.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

FLAVOURS = {  # L, NH, C, T, V
    "gpt2": (12, 12, 768, 1024, 50257),
    "gpt2-medium": (24, 16, 1024, 1024, 50257),
    "gpt2-large": (36, 20, 1280, 1024, 50257),
    "gpt2-xl": (48, 25, 1600, 1024, 50257),
}


def shape_of(spec):
    if spec in FLAVOURS:
        return FLAVOURS[spec]
    try:
        dims = tuple(int(x) for x in spec.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 5 or min(dims) < 1 or dims[2] % dims[1]:
        sys.exit(f"random_hf_gpt2: expected a flavour ({', '.join(FLAVOURS)}) or L,NH,C,T,V with "
                 f"C a multiple of NH, got '{spec}'")
    return dims


def tensors(L, C, T, V):
    """(name, shape) in the order GPT-2's own file has them."""
    out = [("wte.weight", (V, C)), ("wpe.weight", (T, C))]
    for i in range(L):
        h = f"h.{i}."
        out += [(h + "ln_1.weight", (C,)), (h + "ln_1.bias", (C,)),
                (h + "attn.c_attn.weight", (C, 3 * C)), (h + "attn.c_attn.bias", (3 * C,)),
                (h + "attn.c_proj.weight", (C, C)), (h + "attn.c_proj.bias", (C,)),
                (h + "ln_2.weight", (C,)), (h + "ln_2.bias", (C,)),
                (h + "mlp.c_fc.weight", (C, 4 * C)), (h + "mlp.c_fc.bias", (4 * C,)),
                (h + "mlp.c_proj.weight", (4 * C, C)), (h + "mlp.c_proj.bias", (C,))]
    return out + [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]


def copy_tokenizer(vocab, out):
    for names in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        if all(os.path.isfile(os.path.join(vocab, n)) for n in names):
            shutil.copyfile(os.path.join(vocab, names[0]), os.path.join(out, "vocab.json"))
            shutil.copyfile(os.path.join(vocab, names[1]), os.path.join(out, "merges.txt"))
            with open(os.path.join(out, "vocab.json"), encoding="utf-8") as f:
                return len(json.load(f))
    sys.exit(f"random_hf_gpt2: {vocab} holds neither vocab.json + merges.txt nor encoder.json + vocab.bpe")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shape", help="gpt2 | gpt2-medium | gpt2-large | gpt2-xl | L,NH,C,T,V")
    ap.add_argument("out", help="output directory (created)")
    ap.add_argument("--vocab", required=True, help="directory with the GPT-2 tokenizer files")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    L, NH, C, T, V = shape_of(a.shape)
    os.makedirs(a.out, exist_ok=True)
    tokens = copy_tokenizer(a.vocab, a.out)
    if tokens > V:
        sys.exit(f"random_hf_gpt2: the tokenizer has {tokens} tokens, more than vocab_size {V}")
    header, offset = {}, 0
    for name, shape in tensors(L, C, T, V):
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    block = (np.random.default_rng(a.seed).standard_normal(1 << 22) * 0.02).astype("<f4")
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name, shape in tensors(L, C, T, V):
            left = int(np.prod(shape))
            while left > 0:
                n = min(left, block.size)
                f.write(block[:n].tobytes())
                left -= n
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": L, "n_head": NH,
              "n_embd": C, "n_positions": T, "n_ctx": T, "vocab_size": V, "layer_norm_epsilon": 1e-5,
              "activation_function": "gelu_new", "tie_word_embeddings": True}
    with open(os.path.join(a.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    print(f"random_hf_gpt2: {a.out}: L={L} NH={NH} C={C} T={T} V={V}, {offset / 1e9:.2f} GB of fp32 weights")


if __name__ == "__main__":
    main()
