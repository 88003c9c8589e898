"""Reference GPT-2 / nanoGPT forward pass in PyTorch, built straight from an mdi_h5 tensor dict.
It is the yardstick for the C++ backends (tests/fixtures): plain ops, explicit masked softmax
attention (no fused kernels), GELU tanh approximation, any dtype (float64 for fixtures). No
training, no KV cache, no sampling. Runs under torch 1.13 and 2.x.
Dims: B batch, T sequence, C n_embd, NH n_head, HS = C / NH, V vocab_size.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdi_h5  # noqa: E402


def random_tensors(cfg, seed, std=0.02):
    """Random weights for cfg (numpy float32, mdi_h5 names); see mdi_h5.random_tensor for the init.
    cfg["tied_lm_head"] = False adds an lm_head/weight."""
    return dict(mdi_h5.iter_random_tensors(cfg, seed, std))


def layernorm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def linear(x, w, b):
    return F.linear(x, w, b)


def attention(x, w, b, pw, pb, NH):
    """Causal multi-head self-attention; x (B, T, C)."""
    B, T, C = x.shape
    HS = C // NH
    qkv = linear(x, w, b)                                          # (B, T, 3C)
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, NH, HS).transpose(1, 2)                       # (B, NH, T, HS)
    k = k.view(B, T, NH, HS).transpose(1, 2)
    v = v.view(B, T, NH, HS).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)                # (B, NH, T, T)
    mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    att = att.masked_fill(~mask, float("-inf"))
    att = torch.softmax(att, dim=-1)
    y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)       # (B, T, C)
    return linear(y, pw, pb)


def mlp(x, fw, fb, pw, pb):
    return linear(F.gelu(linear(x, fw, fb), approximate="tanh"), pw, pb)


def to_torch(tensors, dtype=torch.float64, device="cpu"):
    return {n: torch.as_tensor(a).to(device=device, dtype=dtype) for n, a in tensors.items()}


@torch.no_grad()
def forward(tensors, cfg, idx, dtype=torch.float64, device="cpu"):
    """Logits (B, T, V) for token ids idx (B, T) (or (T,) -> (T, V)). tensors: mdi_h5 names,
    numpy or torch, cast to dtype; biases absent when cfg bias is false; lm_head/weight if untied."""
    cfg = mdi_h5.check_config(cfg)
    P = tensors if all(isinstance(t, torch.Tensor) and t.dtype == dtype for t in tensors.values()) \
        else to_torch(tensors, dtype, device)
    idx = torch.as_tensor(idx, dtype=torch.long, device=device)
    squeeze = idx.dim() == 1
    if squeeze:
        idx = idx[None]
    B, T = idx.shape
    if T > cfg["block_size"]:
        raise ValueError(f"sequence of {T} tokens exceeds block_size {cfg['block_size']}")
    eps, NH = cfg["layer_norm_eps"], cfg["n_head"]
    def g(n):  # biases are None when the model has none
        return P[n] if cfg["bias"] else None
    x = P["wte"][idx] + P["wpe"][:T]                               # (B, T, C)
    for i in range(cfg["n_layer"]):
        h = f"h/{i}/"
        a = layernorm(x, P[h + "ln_1/weight"], g(h + "ln_1/bias"), eps)
        x = x + attention(a, P[h + "attn/c_attn/weight"], g(h + "attn/c_attn/bias"),
                          P[h + "attn/c_proj/weight"], g(h + "attn/c_proj/bias"), NH)
        m = layernorm(x, P[h + "ln_2/weight"], g(h + "ln_2/bias"), eps)
        x = x + mlp(m, P[h + "mlp/c_fc/weight"], g(h + "mlp/c_fc/bias"),
                    P[h + "mlp/c_proj/weight"], g(h + "mlp/c_proj/bias"))
    x = layernorm(x, P["ln_f/weight"], g("ln_f/bias"), eps)
    logits = x @ P.get("lm_head/weight", P["wte"]).T               # (B, T, V)
    return logits[0] if squeeze else logits
