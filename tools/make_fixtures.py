"""Regenerates tests/fixtures: tiny random models in the mdi-llm HDF5 format and their reference
logits from tools/gpt_ref.py in float64. Deterministic (fixed seeds); run from anywhere:
    /usr/bin/python3 tools/make_fixtures.py
Each reference is also checked against an independent numpy formulation (position-by-position
loops) and every model file is read back and compared, so a broken writer or reference fails here.
"""
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gpt_ref  # noqa: E402
import mdi_h5  # noqa: E402

OUT = os.path.join(os.path.dirname(HERE), "tests", "fixtures")

# Short fixed text with non-ASCII letters (2- and 3-byte UTF-8) for the char vocabulary.
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\n"
        "Speak, speak! Ma la città, perché? Un naïve — ok!\n")
STD = 0.1  # larger than GPT-2's 0.02 so attention is far from uniform and every op shows in logits


def numpy_logits(P, cfg, tokens):
    """Independent float64 reference: explicit loops over positions and heads, erf-free GELU
    written out, online causal attention. P: name -> float64 numpy. Returns (T, V)."""
    C, NH, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_eps"]
    HS = C // NH
    T = len(tokens)
    b = (lambda n: P[n]) if cfg["bias"] else (lambda n: 0.0)

    def ln(x, w, bias):
        mu = x.sum() / len(x)
        var = ((x - mu) ** 2).sum() / len(x)
        return (x - mu) / math.sqrt(var + eps) * w + bias

    def gelu(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    x = [P["wte"][tokens[t]] + P["wpe"][t] for t in range(T)]
    for i in range(cfg["n_layer"]):
        h = f"h/{i}/"
        ks, vs = [], []
        for t in range(T):  # position t sees keys/values 0..t, like a decoder with a KV cache
            a = ln(x[t], P[h + "ln_1/weight"], b(h + "ln_1/bias"))
            qkv = P[h + "attn/c_attn/weight"].dot(a) + b(h + "attn/c_attn/bias")
            q, k, v = qkv[:C], qkv[C:2 * C], qkv[2 * C:]
            ks.append(k)
            vs.append(v)
            y = np.zeros(C)
            for hh in range(NH):
                s = slice(hh * HS, (hh + 1) * HS)
                sc = np.array([q[s].dot(ks[j][s]) / math.sqrt(HS) for j in range(t + 1)])
                p = np.exp(sc - sc.max())
                p /= p.sum()
                y[s] = sum(p[j] * vs[j][s] for j in range(t + 1))
            x[t] = x[t] + P[h + "attn/c_proj/weight"].dot(y) + b(h + "attn/c_proj/bias")
            m = ln(x[t], P[h + "ln_2/weight"], b(h + "ln_2/bias"))
            f = gelu(P[h + "mlp/c_fc/weight"].dot(m) + b(h + "mlp/c_fc/bias"))
            x[t] = x[t] + P[h + "mlp/c_proj/weight"].dot(f) + b(h + "mlp/c_proj/bias")
    head = P.get("lm_head/weight", P["wte"])
    return np.stack([head.dot(ln(x[t], P["ln_f/weight"], b("ln_f/bias"))) for t in range(T)])


def write_ref(path, model_name, tokens, logits, text):
    with mdi_h5.create_file(path) as f:
        f.attrs["model"] = model_name
        f.attrs["text"] = text
        f.attrs["generator"] = "tools/make_fixtures.py (tools/gpt_ref.py, float64)"
        mdi_h5.create_dataset(f, "tokens", np.asarray(tokens, dtype=np.int64))
        mdi_h5.create_dataset(f, "logits", np.asarray(logits, dtype=np.float64))


def eval_loss(tensors, cfg, tokens):
    """Mean cross-entropy the way `mdi-llm --eval` defines it: windows of block_size inputs with
    stride block_size (the last one partial), every position predicting the next token."""
    T, total, count = cfg["block_size"], 0.0, 0
    for start in range(0, len(tokens) - 1, T):
        rows = min(T, len(tokens) - 1 - start)
        logits = gpt_ref.forward(tensors, cfg, tokens[start:start + rows], dtype=torch.float64)
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(tokens[start + 1:start + rows + 1])
        total += float(-logp[torch.arange(rows), target].sum())
        count += rows
    return total / count


def make(name, cfg, seed, dtype, text, eot=None):
    """Writes NAME.h5 and NAME_ref.h5; the reference uses the weights exactly as stored."""
    vocab = mdi_h5.char_vocab(TEXT)
    cfg = dict(cfg, vocab_size=len(vocab))
    tensors = gpt_ref.random_tensors(cfg, seed, STD)
    # eot: a character that ends generation (exercises the end-of-text stop), -1 = none
    tok = {"type": "char", "vocab": vocab, "eot_token": vocab.index(eot) if eot else -1}
    path = os.path.join(OUT, name + ".h5")
    mdi_h5.write_model(path, {k: v for k, v in cfg.items() if k != "tied_lm_head"}, tensors, tok, dtype)

    # Read back: same config, tokenizer and (dtype-rounded) weights.
    rcfg, rt, rtok = mdi_h5.read_model(path)
    assert rcfg == mdi_h5.check_config(cfg), (rcfg, cfg)
    assert rtok == tok, rtok
    stored = {n: a.astype(mdi_h5.DTYPES[dtype]).astype(np.float32) for n, a in tensors.items()}
    assert set(rt) == set(stored)
    for n in stored:
        assert np.array_equal(rt[n], stored[n]), n

    stoi = {c: i for i, c in enumerate(vocab)}
    tokens = [stoi[c] for c in text]
    assert len(tokens) == cfg["block_size"]
    logits = gpt_ref.forward(rt, rcfg, tokens, dtype=torch.float64).numpy()
    check = numpy_logits({n: a.astype(np.float64) for n, a in rt.items()}, rcfg, tokens)
    err = np.abs(logits - check).max()
    assert err < 1e-10, f"{name}: gpt_ref vs numpy loops differ by {err}"
    ref_path = os.path.join(OUT, name + "_ref.h5")
    write_ref(ref_path, name + ".h5", tokens, logits, text)
    EVAL[name + ".h5"] = eval_loss(rt, rcfg, [stoi[c] for c in TEXT])
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {dtype}, L={cfg['n_layer']} NH={cfg['n_head']} "
          f"C={cfg['n_embd']} T={cfg['block_size']} V={cfg['vocab_size']} bias={int(cfg['bias'])} "
          f"tied={int(cfg.get('tied_lm_head', True))})")
    print(f"wrote {ref_path} ({os.path.getsize(ref_path)} bytes, tokens {len(tokens)}, "
          f"|logits| max {np.abs(logits).max():.3f}, gpt_ref vs numpy loops {err:.1e})")


EVAL = {}  # model file -> reference --eval loss on TEXT


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)  # same float64 sums on every machine
    assert any(ord(c) > 127 for c in TEXT[-32:]) and any(ord(c) > 127 for c in TEXT[-16:])
    gpt2 = dict(model_type="gpt2", n_layer=4, n_head=4, n_embd=64, block_size=32, bias=True,
                layer_norm_eps=1e-5)
    nano = dict(model_type="nanogpt", n_layer=3, n_head=2, n_embd=48, block_size=16, bias=False,
                layer_norm_eps=1e-5, tied_lm_head=False)
    make("tiny_gpt2", gpt2, 1234, "float32", TEXT[-32:])
    make("tiny_nanogpt", nano, 5678, "float32", TEXT[-16:], eot="\n")
    make("tiny_gpt2_fp16", gpt2, 1234, "float16", TEXT[-32:])
    with open(os.path.join(OUT, "eval_ref.json"), "w", encoding="utf-8") as f:
        json.dump({"text": TEXT, "loss": EVAL, "generator": "tools/make_fixtures.py (float64)"}, f,
                  indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote eval_ref.json: {EVAL}")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT) if f.endswith(".h5"))
    print(f"total {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
