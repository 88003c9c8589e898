"""Makes the conversion fixtures in tests/fixtures (small, committed): a tiny random GPT-2 in Hugging
Face layout (hf_tiny/: config.json, model.safetensors, pytorch_model.bin with Conv1D (in, out)
weights, vocab.json + merges.txt) and a tiny nanoGPT char model (nanogpt_tiny/: ckpt.pt with the
torch.compile "_orig_mod." prefix, meta.pkl), each with reference logits for a fixed input
(*_ref.h5: /tokens, /logits (T, V)). With transformers installed the HF model and its logits come
from GPT2LMHeadModel and save_pretrained; otherwise the same files are written by hand and the
logits come from tools/gpt_ref.py (float64). The tokenizer is a small byte-level BPE in GPT-2's
format (256 bytes + a few merges + <|endoftext|>), or GPT-2's own with --gpt2-vocab DIR.
    /usr/bin/python3 tools/make_hf_fixture.py [--out tests/fixtures] [--gpt2-vocab DIR] [--hf-only]
"""
import argparse
import collections
import json
import os
import pickle
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe_vocab  # noqa: E402
import convert_pickle  # noqa: E402
import gpt_ref  # noqa: E402
import mdi_h5  # noqa: E402

BPE_TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
            "First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved.")
CHAR_TEXT = "ROMEO: O, she doth teach the torches to burn bright!\nJULIET: Adieu, adieu — café 1592.\n"


def tiny_bpe(n_merges=24):
    """(vocab dict token -> id, merges list of 'a b') in GPT-2's file format: the 256 byte tokens
    in byte_encoder order, n_merges merges learnt on BPE_TEXT, then <|endoftext|>."""
    b2u = bpe_vocab.bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u, key=lambda b: ord(b2u[b])))}
    words = collections.Counter()
    for i, w in enumerate(BPE_TEXT.split(" ")):
        words[tuple(b2u[b] for b in ((" " if i else "") + w).encode())] += 1
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[a, b] += n
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
        new = collections.Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += n
        words = new
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def hf_state_dict(t, cfg):
    """mdi_h5 tensors (numpy, (out, in)) -> GPT2LMHeadModel's state dict: Conv1D weights (in, out)."""
    sd = {}
    for n, a in t.items():
        x = torch.from_numpy(np.ascontiguousarray(a))
        if n in ("wte", "wpe"):
            key = n + ".weight"
        else:
            key = n.replace("/", ".")
            if len(a.shape) == 2:  # c_attn, c_proj, c_fc, mlp c_proj: Conv1D
                x = x.t().contiguous()
        sd["transformer." + key] = x
    return sd


def write_ref(path, tokens, logits, generator):
    with mdi_h5.create_file(path) as f:
        mdi_h5.create_dataset(f, "tokens", np.asarray(tokens, dtype=np.int64))
        mdi_h5.create_dataset(f, "logits", np.asarray(logits, dtype=np.float32))
        f.attrs["generator"] = generator


def make_hf(out, gpt2_vocab, seed=1):
    d = os.path.join(out, "hf_tiny")
    os.makedirs(d, exist_ok=True)
    if gpt2_vocab:
        vj, mt = bpe_vocab.find_files(gpt2_vocab)
        shutil.copy(vj, os.path.join(d, "vocab.json"))
        shutil.copy(mt, os.path.join(d, "merges.txt"))
        with open(vj, encoding="utf-8") as f:
            V = len(json.load(f))
    else:
        vocab, merges = tiny_bpe()
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        V = len(vocab)
    L, NH, C, T = 2, 4, 32, 16
    cfg = dict(model_type="gpt2", n_layer=L, n_head=NH, n_embd=C, block_size=T, vocab_size=V,
               bias=True, layer_norm_eps=1e-5)
    t = gpt_ref.random_tensors(cfg, seed)
    sd = hf_state_dict(t, cfg)
    tokens = np.random.default_rng(seed + 100).integers(0, V, size=T)
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
              "n_layer": L, "n_head": NH, "n_embd": C, "n_positions": T, "n_ctx": T, "vocab_size": V,
              "layer_norm_epsilon": 1e-5, "bos_token_id": V - 1, "eos_token_id": V - 1,
              "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0}
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is not None:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias", "lm_head.weight"))
                                      for k in missing), (missing, unexpected)
        model.save_pretrained(d)  # model.safetensors: the default (transformers >= 5: the only) format
        try:  # pytorch_model.bin: transformers < 5 write it themselves
            model.save_pretrained(d + "_bin_tmp", safe_serialization=False)
        except TypeError:
            pass
        binf = os.path.join(d + "_bin_tmp", "pytorch_model.bin")
        if os.path.exists(binf):
            shutil.move(binf, os.path.join(d, "pytorch_model.bin"))
        else:  # what they wrote: torch.save of the state dict (lm_head.weight shares wte's storage)
            torch.save(model.state_dict(), os.path.join(d, "pytorch_model.bin"))
        shutil.rmtree(d + "_bin_tmp", ignore_errors=True)
        for extra in ("generation_config.json",):  # not read by mdi-convert: keep the fixture small
            if os.path.exists(os.path.join(d, extra)):
                os.remove(os.path.join(d, extra))
        with torch.no_grad():
            logits = model.double()(torch.as_tensor(tokens)[None]).logits[0].numpy()
        how = f"transformers {transformers.__version__}"
    else:
        # What save_pretrained writes: safetensors without the tied lm_head and the mask buffers;
        # the .bin of older transformers with both (lm_head == wte, uint8 causal masks, masked_bias).
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        convert_pickle.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
        bin_sd = dict(sd)
        bin_sd["lm_head.weight"] = sd["transformer.wte.weight"]
        for i in range(L):
            bin_sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(T, T, dtype=torch.uint8)).view(1, 1, T, T)
            bin_sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        torch.save(bin_sd, os.path.join(d, "pytorch_model.bin"))
        logits = gpt_ref.forward(t, cfg, tokens).numpy()
        how = "gpt_ref.py (no transformers)"
    write_ref(os.path.join(out, "hf_tiny_ref.h5"), tokens, logits, how)
    print(f"wrote {d}/ and hf_tiny_ref.h5: L={L} NH={NH} C={C} T={T} V={V}, logits by {how}")


def make_nanogpt(out, seed=2):
    d = os.path.join(out, "nanogpt_tiny")
    os.makedirs(d, exist_ok=True)
    chars = mdi_h5.char_vocab(CHAR_TEXT)
    stoi = {ch: i for i, ch in enumerate(chars)}
    with open(os.path.join(d, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    L, NH, C, T, V = 2, 2, 16, 16, len(chars)
    args = dict(n_layer=L, n_head=NH, n_embd=C, block_size=T, bias=False, vocab_size=V, dropout=0.0)
    cfg = dict(model_type="nanogpt", n_layer=L, n_head=NH, n_embd=C, block_size=T, vocab_size=V,
               bias=False, layer_norm_eps=1e-5)
    t = gpt_ref.random_tensors(cfg, seed)
    sd = {}
    for n, a in t.items():  # nanoGPT: nn.Linear (out, in), as the file; torch.compile's prefix
        key = n + ".weight" if n in ("wte", "wpe") else n.replace("/", ".")
        sd["_orig_mod.transformer." + key] = torch.from_numpy(np.ascontiguousarray(a))
    sd["_orig_mod.lm_head.weight"] = sd["_orig_mod.transformer.wte.weight"]  # tied: one storage
    for i in range(L):  # the causal mask of nanoGPT without flash attention
        sd[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    ckpt = {"model": sd, "model_args": args, "iter_num": 0, "best_val_loss": torch.tensor(9.9),
            "config": {"dataset": "shakespeare_char", "compile": True}, "optimizer": {}}
    torch.save(ckpt, os.path.join(d, "ckpt.pt"))
    tokens = [stoi[ch] for ch in CHAR_TEXT[:T]]
    write_ref(os.path.join(out, "nanogpt_tiny_ref.h5"), tokens, gpt_ref.forward(t, cfg, tokens).numpy(),
              f"gpt_ref.py (float64), ckpt.pt by torch {torch.__version__}")
    print(f"wrote {d}/ and nanogpt_tiny_ref.h5: L={L} NH={NH} C={C} T={T} V={V} bias=0")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--gpt2-vocab", help="directory with encoder.json + vocab.bpe: GPT-2's own tokenizer "
                    "(V = 50257; makes a bigger fixture)")
    ap.add_argument("--hf-only", action="store_true")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    make_hf(a.out, a.gpt2_vocab)
    if not a.hf_only:
        make_nanogpt(a.out)


if __name__ == "__main__":
    main()
