"""Trains the bundled default model, data/shakespeare_char.h5: nanoGPT's character-level GPT on tiny
Shakespeare (config/train_shakespeare_char.py), then stores it as float16 through tools/mdi_h5.py.
Also the reference evaluator (--eval-only) whose number the C++ engine's `--eval FILE` must match.
Not here: data download, multi-GPU training, checkpoint resume. Runs under torch 1.13 (CPU) and 2.x.
Dims: B batch, T sequence (block_size), C n_embd, NH n_head, HS = C / NH, L n_layer, V vocab_size.

Reference eval loss (what --eval-only prints and what `mdi-llm --eval FILE` computes):
  the text is encoded to N token ids (char vocabulary, every character must be in it); it is cut into
  windows of T = block_size input tokens, stride T: window w holds inputs ids[w*T : w*T + rows] with
  rows = min(T, N-1 - w*T) (so the last window may be partial) and targets shifted by one; the
  positions of each window start at 0. loss = sum over all N-1 predictions of
  -log softmax(logits)[next id], divided by N-1. Forward in float32 (no TF32, no autocast), plain
  masked-softmax attention, dropout off; log-softmax taken in float64 on the float32 logits.

  tools/train_char.py --data PATH [--out data/shakespeare_char.h5] ...        # train (see --help)
  tools/train_char.py --eval-only data/shakespeare_char.h5 --text PATH [--split val]
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdi_h5  # noqa: E402

TRAIN_FRACTION = 0.9  # nanoGPT prepare.py: first 90% of the characters train, last 10% validation


# ---------------------------------------------------------------------------------------------
# data

def read_text(path):
    with open(path, "r", encoding="utf-8") as f:
        return f.read()


def split_text(text, split):
    """'train' = first 90% of the characters, 'val' = the rest, 'all' = everything."""
    n = int(len(text) * TRAIN_FRACTION)
    return {"train": text[:n], "val": text[n:], "all": text}[split]


def encode(text, vocab):
    stoi = {ch: i for i, ch in enumerate(vocab)}
    missing = sorted(set(text) - set(stoi))
    if missing:
        raise ValueError(f"text has characters outside the vocabulary: {missing[:10]!r}")
    return np.array([stoi[ch] for ch in text], dtype=np.int64)


def decode(ids, vocab):
    return "".join(vocab[i] for i in ids)


# ---------------------------------------------------------------------------------------------
# model (nanoGPT model.py, with names that map 1:1 onto the mdi_h5 tensor names)

class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch 1.13's nn.LayerNorm cannot drop only the bias)."""

    def __init__(self, C, bias, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.bias = nn.Parameter(torch.zeros(C)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg, dropout):
        super().__init__()
        C = cfg["n_embd"]
        self.c_attn = nn.Linear(C, 3 * C, bias=cfg["bias"])
        self.c_proj = nn.Linear(C, C, bias=cfg["bias"])
        self.NH = cfg["n_head"]
        self.dropout = dropout
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.exact = False  # True: explicit masked softmax, the evaluator's reference path

    def forward(self, x):
        B, T, C = x.shape
        HS = C // self.NH
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.NH, HS).transpose(1, 2)            # (B, NH, T, HS)
        k = k.view(B, T, self.NH, HS).transpose(1, 2)
        v = v.view(B, T, self.NH, HS).transpose(1, 2)
        if not self.exact and hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))  # (B, NH, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~mask, float("-inf"))
            att = self.attn_dropout(torch.softmax(att, dim=-1))
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg, dropout):
        super().__init__()
        C = cfg["n_embd"]
        self.c_fc = nn.Linear(C, 4 * C, bias=cfg["bias"])
        self.c_proj = nn.Linear(4 * C, C, bias=cfg["bias"])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # GELU tanh approximation: the C++ engine implements exactly this one
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg, dropout):
        super().__init__()
        self.ln_1 = LayerNorm(cfg["n_embd"], cfg["bias"], cfg["layer_norm_eps"])
        self.attn = CausalSelfAttention(cfg, dropout)
        self.ln_2 = LayerNorm(cfg["n_embd"], cfg["bias"], cfg["layer_norm_eps"])
        self.mlp = MLP(cfg, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg, dropout=0.0):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg["vocab_size"], cfg["n_embd"])
        self.wpe = nn.Embedding(cfg["block_size"], cfg["n_embd"])
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList([Block(cfg, dropout) for _ in range(cfg["n_layer"])])
        self.ln_f = LayerNorm(cfg["n_embd"], cfg["bias"], cfg["layer_norm_eps"])
        # nanoGPT init: N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), zero biases
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for n, p in self.named_parameters():
            if n.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg["n_layer"]))

    def set_exact(self, exact):
        for b in self.h:
            b.attn.exact = exact

    def forward(self, idx):
        """Logits (B, T, V) for ids (B, T); the lm_head is tied to wte."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for b in self.h:
            x = b(x)
        return F.linear(self.ln_f(x), self.wte.weight)

    # mdi_h5 names: "h.0.attn.c_attn.weight" <-> "h/0/attn/c_attn/weight"; "wte.weight" <-> "wte"
    def to_mdi(self):
        out = {}
        for n, p in self.state_dict().items():
            name = n.replace(".", "/")
            if name in ("wte/weight", "wpe/weight"):
                name = name[:3]
            out[name] = p.detach().float().cpu().numpy()
        return out

    def load_mdi(self, tensors):
        sd = {}
        for n, a in tensors.items():
            key = n + ".weight" if n in ("wte", "wpe") else n.replace("/", ".")
            sd[key] = torch.as_tensor(np.asarray(a, dtype=np.float32))
        self.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------------------------------------
# the reference eval loss (module docstring; identical definition in src/pipeline.cpp Evaluator)

@torch.no_grad()
def eval_loss(model, ids, T, device, batch=32):
    """Mean next-token cross-entropy (nats) over the N-1 predictions of ids (numpy int64, N >= 2)."""
    if len(ids) < 2:
        raise ValueError("the text needs at least two tokens")
    was_training = model.training
    model.eval()
    model.set_exact(True)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        x_all = torch.as_tensor(ids, dtype=torch.long, device=device)
        N = len(ids)
        nfull = (N - 1) // T
        windows = [(w * T, T) for w in range(nfull)]
        if N - 1 - nfull * T > 0:
            windows.append((nfull * T, N - 1 - nfull * T))
        total = 0.0
        i = 0
        while i < len(windows):
            rows = windows[i][1]
            group = [windows[j] for j in range(i, min(i + batch, len(windows))) if windows[j][1] == rows]
            starts = torch.tensor([s for s, _ in group], device=device)
            offs = torch.arange(rows + 1, device=device)
            chunk = x_all[starts[:, None] + offs[None, :]]            # (B, rows+1)
            logits = model(chunk[:, :-1]).double()                    # float32 forward, (B, rows, V)
            lp = torch.log_softmax(logits, dim=-1)
            total += -lp.gather(-1, chunk[:, 1:, None]).sum().item()
            i += len(group)
        return total / (N - 1)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        model.set_exact(False)
        model.train(was_training)


def model_from_h5(path, device):
    cfg, tensors, tok = mdi_h5.read_model(path)
    if tok["type"] != "char":
        raise ValueError(f"{path}: tokenizer is {tok['type']!r}; --eval-only handles char models")
    model = GPT(cfg)
    model.load_mdi(tensors)
    return model.to(device), cfg, tok


def fp16_roundtrip(model):
    """A float32 copy of model with every parameter rounded to float16, as the stored file holds it."""
    m = GPT(model.cfg)
    m.load_state_dict({k: v.detach().cpu().half().float() for k, v in model.state_dict().items()})
    return m


# ---------------------------------------------------------------------------------------------
# sampling (temperature + top-k, like nanoGPT sample.py)

@torch.no_grad()
def generate(model, ids, n_new, temperature, top_k, gen):
    model.eval()
    model.set_exact(True)
    T = model.cfg["block_size"]
    for _ in range(n_new):
        logits = model(ids[:, -T:])[:, -1, :] / temperature
        if top_k:
            v, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
            logits[logits < v[:, [-1]]] = -float("inf")
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
        ids = torch.cat([ids, nxt], dim=1)
    model.set_exact(False)
    return ids


# ---------------------------------------------------------------------------------------------
# training

def lr_at(it, a):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters (nanoGPT get_lr)."""
    if it < a.warmup_iters:
        return a.lr * (it + 1) / (a.warmup_iters + 1)
    if it > a.lr_decay_iters:
        return a.min_lr
    r = (it - a.warmup_iters) / (a.lr_decay_iters - a.warmup_iters)
    return a.min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (a.lr - a.min_lr)


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def log(msg):
    print(msg, flush=True)


def train(a):
    t_start = time.time()
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    seed_all(a.seed)
    text = read_text(a.data)
    vocab = mdi_h5.char_vocab(text)
    train_ids = encode(split_text(text, "train"), vocab)
    val_ids = encode(split_text(text, "val"), vocab)
    cfg = mdi_h5.check_config({"model_type": "nanogpt", "n_layer": a.n_layer, "n_head": a.n_head,
                               "n_embd": a.n_embd, "block_size": a.block_size, "vocab_size": len(vocab),
                               "bias": a.bias, "layer_norm_eps": 1e-5})
    dev_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    log(f"torch {torch.__version__}, device {device} ({dev_name}), seed {a.seed}")
    log(f"data {a.data}: {len(text)} chars, vocab {len(vocab)}, train {len(train_ids)}, val {len(val_ids)}")
    log("config " + json.dumps({k: cfg[k] for k in ("model_type", "n_layer", "n_head", "n_embd",
                                                   "block_size", "vocab_size", "bias", "layer_norm_eps")}))

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(cfg, dropout=a.dropout).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"parameters: {n_params} ({n_params - model.wpe.weight.numel()} without wpe)")

    # AdamW, weight decay on matrices and embeddings only (nanoGPT configure_optimizers)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {}
    if device == "cuda" and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames:
        extra["fused"] = True
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(a.beta1, a.beta2), **extra)

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[a.amp]
    if device != "cuda":
        amp_dtype = None
    use_scaler = amp_dtype == torch.float16
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        scaler = torch.amp.GradScaler("cuda" if device == "cuda" else "cpu", enabled=use_scaler)
    else:
        scaler = torch.cuda.amp.GradScaler(enabled=use_scaler)

    def autocast():
        if amp_dtype is None:
            return torch.autocast(device_type="cpu", enabled=False)
        return torch.autocast(device_type="cuda", dtype=amp_dtype)

    fwd = model
    if a.compile and hasattr(torch, "compile") and device == "cuda":
        log("compiling the model (torch.compile)")
        fwd = torch.compile(model)

    T, B = cfg["block_size"], a.batch_size
    data = {"train": torch.as_tensor(train_ids, device=device), "val": torch.as_tensor(val_ids, device=device)}
    gens = {s: torch.Generator(device=device) for s in ("train", "val", "est_train")}
    gens["train"].manual_seed(a.seed)
    offs = torch.arange(T + 1, device=device)

    def get_batch(split, gen):
        d = data[split]
        ix = torch.randint(len(d) - T, (B,), generator=gen, device=device)
        chunk = d[ix[:, None] + offs[None, :]]
        return chunk[:, :-1], chunk[:, 1:]

    def step_loss(x, y):
        with autocast():
            logits = fwd(x)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def estimate_loss():
        """nanoGPT estimate_loss: mean over eval_iters random batches per split (same batches each
        time: fixed generator seeds), training precision, dropout off."""
        model.eval()
        out = {}
        for split, gname in (("train", "est_train"), ("val", "val")):
            gens[gname].manual_seed(a.seed + (1 if split == "train" else 2))
            losses = torch.zeros(a.eval_iters, device=device)
            for k in range(a.eval_iters):
                losses[k] = step_loss(*get_batch(split, gens[gname]))
            out[split] = losses.mean().item()
        model.train()
        return out

    if a.compile and fwd is not model:  # a failing compile falls back to eager
        try:
            x, y = get_batch("train", torch.Generator(device=device).manual_seed(0))
            step_loss(x, y).backward()
            model.zero_grad(set_to_none=True)
        except Exception as e:  # noqa: BLE001
            log(f"torch.compile failed ({type(e).__name__}: {e}); training eager")
            fwd = model

    history, best, best_state, best_iter = [], float("inf"), None, -1
    t_train = time.time()
    it, stopped_early = 0, False
    model.train()
    while True:
        for g in opt.param_groups:
            g["lr"] = lr_at(it, a)
        if it % a.eval_interval == 0 or it == a.max_iters:
            est = estimate_loss()
            history.append({"iter": it, "train": est["train"], "val": est["val"],
                            "time_s": round(time.time() - t_train, 1)})
            log(f"step {it}: train loss {est['train']:.4f}, val loss {est['val']:.4f} "
                f"({time.time() - t_train:.1f} s)")
            if it > 0 and est["val"] < best:
                best, best_iter = est["val"], it
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if it >= a.max_iters:
            break
        if a.time_limit and time.time() - t_train > a.time_limit:
            log(f"time limit {a.time_limit} s reached at iter {it}; stopping")
            stopped_early = True
            est = estimate_loss()
            history.append({"iter": it, "train": est["train"], "val": est["val"],
                            "time_s": round(time.time() - t_train, 1)})
            if est["val"] < best:
                best, best_iter = est["val"], it
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            break
        x, y = get_batch("train", gens["train"])
        loss = step_loss(x, y)
        scaler.scale(loss).backward()
        if a.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if it % a.log_interval == 0:
            log(f"iter {it}: loss {loss.item():.4f}, lr {lr_at(it, a):.2e}, {time.time() - t_train:.1f} s")
        it += 1
    train_s = time.time() - t_train
    last_iter = it
    if best_state is not None and a.keep == "best":
        model.load_state_dict(best_state)
        kept = best_iter
    else:
        kept = last_iter
    kept_est = next(h for h in history if h["iter"] == kept)
    log(f"training: {last_iter} iters in {train_s:.1f} s; keeping the weights of iter {kept} "
        f"(estimated train {kept_est['train']:.4f}, val {kept_est['val']:.4f})")

    # exact evaluation: trained float32 weights, then the float16-rounded weights the file stores
    model.eval()
    exact32 = eval_loss(model, val_ids, T, device)
    m16 = fp16_roundtrip(model).to(device)
    exact16_val = eval_loss(m16, val_ids, T, device)
    exact16_train = eval_loss(m16, train_ids, T, device)
    log(f"reference eval loss, val split, float32 weights: {exact32:.6f}")
    log(f"reference eval loss, val split, stored fp16 weights: {exact16_val:.6f}")
    log(f"reference eval loss, train split, stored fp16 weights: {exact16_train:.6f}")

    tokenizer = {"type": "char", "vocab": vocab, "eot_token": -1}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    mdi_h5.write_model(a.out, cfg, model.to_mdi(), tokenizer, dtype="float16")
    size = os.path.getsize(a.out)
    log(f"wrote {a.out}: {size} bytes ({size / 2**20:.2f} MiB)")
    m_file, _, _ = model_from_h5(a.out, device)
    exact_file = eval_loss(m_file, val_ids, T, device)
    log(f"reference eval loss of the stored fp16 model (re-read from the file), val split: {exact_file:.6f}")

    samples = []
    for i in range(a.samples):
        gen = torch.Generator(device=device)
        gen.manual_seed(a.seed + 100 + i)
        start = torch.tensor([[vocab.index("\n")]], device=device)
        out = generate(m_file, start, a.sample_len, a.temperature, a.top_k, gen)
        s = decode(out[0].tolist(), vocab)
        samples.append(s)
        log(f"--- sample {i} (temperature {a.temperature}, top-k {a.top_k}, seed {a.seed + 100 + i}) ---{s}")

    summary = {"script": "tools/train_char.py", "argv": sys.argv[1:], "torch": torch.__version__,
               "device": dev_name, "seed": a.seed, "config": {k: cfg[k] for k in cfg},
               "train": {k: getattr(a, k) for k in ("dropout", "batch_size", "max_iters", "lr", "min_lr",
                                                  "warmup_iters", "lr_decay_iters", "weight_decay", "beta1",
                                                  "beta2", "grad_clip", "eval_interval", "eval_iters", "amp",
                                                  "compile", "keep")},
               "compiled": fwd is not model, "iters_run": last_iter, "stopped_early": stopped_early,
               "kept_iter": kept, "estimated_loss_kept": kept_est, "history": history,
               "eval_val_fp32": exact32, "eval_val_fp16": exact16_val, "eval_train_fp16": exact16_train,
               "eval_val_file": exact_file, "file_bytes": size, "n_params": n_params,
               "train_time_s": round(train_s, 1), "wall_time_s": round(time.time() - t_start, 1),
               "samples": samples, "sampling": {"temperature": a.temperature, "top_k": a.top_k,
                                               "len": a.sample_len, "prompt": "\\n"}}
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump(summary, f, indent=1)
    log(f"total wall time {time.time() - t_start:.1f} s")


def eval_only(a):
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg, tok = model_from_h5(a.eval_only, device)
    ids = encode(split_text(read_text(a.text), a.split), tok["vocab"])
    t0 = time.time()
    loss = eval_loss(model, ids, cfg["block_size"], device)
    print(f"{a.eval_only}: {len(ids) - 1} predictions ({a.split} of {a.text}), "
          f"eval loss {loss:.6f} ({time.time() - t0:.1f} s on {device})")
    print(f"{loss:.6f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="/work/shared/data/tiny_shakespeare.txt", help="the corpus (read only)")
    p.add_argument("--out", default="data/shakespeare_char.h5")
    p.add_argument("--summary", default="", help="write a JSON summary (numbers, samples) here")
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--bias", action="store_true", help="biases in Linear and LayerNorm (nanoGPT default off)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-iters", type=int, default=5000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup-iters", type=int, default=100)
    p.add_argument("--lr-decay-iters", type=int, default=5000)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--eval-iters", type=int, default=200)
    p.add_argument("--log-interval", type=int, default=100)
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="store the weights with the best estimated val loss (nanoGPT) or the last ones")
    p.add_argument("--amp", choices=("bf16", "fp16", "fp32"), default="bf16", help="autocast dtype on CUDA")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction if hasattr(argparse, "BooleanOptionalAction")
                   else "store_true", default=False, help="torch.compile the model (torch 2.x, CUDA)")
    p.add_argument("--time-limit", type=float, default=0, help="stop training after this many seconds (0: none)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--sample-len", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--eval-only", metavar="FILE.h5", help="print the reference eval loss of FILE.h5 on --text")
    p.add_argument("--text", help="text for --eval-only")
    p.add_argument("--split", choices=("all", "train", "val"), default="all",
                   help="--eval-only: whole text, its first 90%% or its last 10%% (characters)")
    a = p.parse_args()
    if a.eval_only:
        if not a.text:
            p.error("--eval-only needs --text")
        eval_only(a)
    else:
        train(a)


if __name__ == "__main__":
    main()
