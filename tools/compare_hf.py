#!/usr/bin/env python3
"""mdi-llm against Hugging Face transformers on one machine (meant for the GPU machine): a random
GPT-2-shaped GPT2LMHeadModel is saved as a Hugging Face checkpoint, converted with mdi-convert, and

  convert: the logits of mdi-logits (CPU, and CUDA fp32 / fp16 where there is a GPU) against the
           model's over one sequence (prompt + 100 greedy tokens), and mdi-llm's greedy tokens with
           1 and 3 ranks (CPU) against transformers' generate; where they part, the two best logits
           of that step;
  bench:   tokens/s of transformers generate (fp16, KV cache, greedy) against mdi-llm --device cuda
           --dtype fp16 with the same samples (batch) and tokens, 1 rank;
  shared:  mdi-llm with 1 and with 3 ranks sharing the GPU, 3 samples: tokens/s and each rank's
           compute / communication / wait; then the same under an MPS daemon that the tool starts
           and stops (skipped with a message where nvidia-cuda-mps-control is missing or fails;
           with a daemon already running, only runs under it, recorded as such).

Needs torch, transformers, numpy and a build of mdi-llm, mdi-convert and mdi-logits. Writes
compare_hf_SHAPE.json (the figures) and compare_hf_SHAPE.log into --out, prints a summary.
    python3 tools/compare_hf.py --build build-gpu --gpt2-vocab DIR --out OUT [--shape gpt2-xl]
                                [--parts convert,bench,shared]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch

SHAPES = {"tiny": (2, 4, 64), "gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024),
          "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600)}
PROMPT = "The ring of boards passes one row of activations per sample:"
LOG = []


def say(*a):
    line = " ".join(str(x) for x in a)
    LOG.append(line)
    print(line, flush=True)


def sh(cmd, **kw):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        say("FAILED:", " ".join(cmd), "\n", p.stdout[-3000:], p.stderr[-3000:])
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}")
    return p, time.time() - t0


def mpirun(n):
    return (["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(n)]
            if n > 1 else [])


def make_checkpoint(a, work):
    import transformers
    L, NH, C = SHAPES[a.shape]
    d = os.path.join(work, f"hf_{a.shape}")
    cfg = transformers.GPT2Config(n_layer=L, n_head=NH, n_embd=C, n_positions=1024, vocab_size=50257,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(a.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    with torch.device(dev):
        model = transformers.GPT2LMHeadModel(cfg).eval()
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, max_shard_size="100GB")  # one model.safetensors
    shutil.copy(os.path.join(a.gpt2_vocab, "encoder.json"), os.path.join(d, "vocab.json"))
    shutil.copy(os.path.join(a.gpt2_vocab, "vocab.bpe"), os.path.join(d, "merges.txt"))
    say(f"transformers {transformers.__version__}, torch {torch.__version__}: random {a.shape} "
        f"(L={L} NH={NH} C={C}) saved to {d} in {time.time() - t0:.1f} s "
        f"({sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 1e9:.2f} GB)")
    return model, d


def convert(a, d, out, dtype):
    p, secs = sh([os.path.join(a.build, "mdi-convert"), "--hf", d, "-o", out, "--dtype", dtype])
    say(f"mdi-convert {dtype}: {secs:.1f} s; {p.stdout.strip().splitlines()[-1].strip()}")


def prompt_ids(a, model_h5):
    p, _ = sh([os.path.join(a.build, "mdi-llm"), "--model", model_h5, "--tokenize"], input=PROMPT)
    return [int(x) for x in p.stdout.split()]


def mdi_logits(a, model_h5, ids, device="cpu", dtype="fp32"):
    f = os.path.join(a.work, "logits.f32")
    _, secs = sh([os.path.join(a.build, "mdi-logits"), "--model", model_h5, "--ids", " ".join(map(str, ids)),
                  "-o", f, "--device", device, "--dtype", dtype])
    return np.fromfile(f, dtype=np.float32).reshape(len(ids), -1), secs


def mdi_generate(a, model_h5, ranks, samples, tokens, extra=()):
    out = os.path.join(a.work, "gen.jsonl")
    rep = os.path.join(a.work, "gen.json")
    cmd = mpirun(ranks) + [os.path.join(a.build, "mdi-llm"), "--model", model_h5, "--prompt", PROMPT,
                           "--samples", str(samples), "--tokens", str(tokens), "--temperature", "0",
                           "--output", out, "--report-json", rep] + list(extra)
    p, secs = sh(cmd)
    rows = sorted((json.loads(l) for l in open(out)), key=lambda r: r["id"])
    return [r["tokens"] for r in rows], json.load(open(rep)), p.stderr


def part_convert(a, model, d, fig):
    f32 = os.path.join(a.work, f"{a.shape}_fp32.h5")
    convert(a, d, f32, "fp32")
    ids = prompt_ids(a, f32)
    dev = next(model.parameters()).device
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = model.float()
    K = a.tokens
    with torch.no_grad():
        x = torch.tensor([ids], device=dev)
        g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=K, min_new_tokens=K, do_sample=False,
                           pad_token_id=50256, output_logits=True, return_dict_in_generate=True)
        hf_tokens = g.sequences[0, len(ids):].tolist()
        seq = ids + hf_tokens[:-1]  # every input whose next-token logits generate used
        ref = model(torch.tensor([seq], device=dev)).logits[0].double().cpu().numpy()
    fig["prompt_tokens"] = len(ids)
    fig["hf_greedy_tokens"] = hf_tokens
    got, secs = mdi_logits(a, f32, seq)
    err = float(np.abs(got - ref).max())
    fig["logits_max_abs_err_cpu"] = err
    fig["logits_ref_abs_max"] = float(np.abs(ref).max())
    say(f"logits over {len(seq)} positions x {ref.shape[1]}: mdi CPU fp32 vs transformers fp32 ({dev}): "
        f"max abs err {err:.3g} (|logit| <= {np.abs(ref).max():.2f}); mdi-logits {secs:.1f} s")
    if torch.cuda.is_available():
        for dtype in ("fp32", "fp16", "bf16"):
            try:
                got_c, _ = mdi_logits(a, f32, seq, "cuda:0", dtype)
            except RuntimeError:
                continue
            e = float(np.abs(got_c - got).max())
            rel = float(np.linalg.norm(got_c - got) / np.linalg.norm(got))
            fig[f"logits_cuda_{dtype}_vs_cpu"] = {"max_abs": e, "rel_l2": rel}
            say(f"  mdi CUDA {dtype} vs mdi CPU fp32: max abs {e:.3g}, relative L2 {rel:.3g}")
    # Greedy tokens through the ring, 1 and 3 ranks, against generate's.
    for ranks in (1, 3):
        toks, rep, _ = mdi_generate(a, f32, ranks, 1, K, ["--threads", str(max(1, os.cpu_count() // ranks))])
        t = toks[0]
        same = next((i for i in range(min(len(t), K)) if t[i] != hf_tokens[i]), None)
        entry = {"identical_steps": K if same is None else same, "tokens_per_s": rep["tokens_per_s"]}
        if same is not None:  # the two best logits of that step, in transformers and in mdi
            row = g.logits[same][0].double().cpu().numpy()
            top = np.sort(row)[-2:]
            entry["hf_top2_gap_at_split"] = float(top[1] - top[0])
            mine, _ = mdi_logits(a, f32, ids + hf_tokens[:same])
            mt = np.sort(mine[-1])[-2:]
            entry["mdi_top2_gap_at_split"] = float(mt[1] - mt[0])
        fig[f"greedy_np{ranks}"] = entry
        say(f"mdi-llm np {ranks} (CPU): greedy tokens identical to transformers for {entry['identical_steps']}"
            f" of {K} steps" + ("" if same is None else f"; at step {same} the two best logits differ by "
                                 f"{entry['hf_top2_gap_at_split']:.3g} (transformers), "
                                 f"{entry['mdi_top2_gap_at_split']:.3g} (mdi)")
            + f"; {rep['tokens_per_s']:.2f} tokens/s")
    os.remove(f32)


def hf_generate_rate(model, ids, S, K, reps=2):
    dev = next(model.parameters()).device
    x = torch.tensor([ids] * S, device=dev)
    kw = dict(do_sample=False, pad_token_id=50256, use_cache=True, attention_mask=torch.ones_like(x))
    with torch.no_grad():
        model.generate(x, max_new_tokens=8, min_new_tokens=8, **kw)  # warm-up
        best = 1e9
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.time()
            model.generate(x, max_new_tokens=K, min_new_tokens=K, **kw)
            torch.cuda.synchronize()
            best = min(best, time.time() - t0)
    return S * K / best


def part_bench(a, model, d, fig):
    if not torch.cuda.is_available():
        say("bench: no GPU, skipped")
        return
    f16 = fp16_model(a, d)
    ids = prompt_ids(a, f16)
    model = model.half().cuda()
    K = a.bench_tokens
    for S in (1, 8):
        hf = hf_generate_rate(model, ids, S, K)
        runs = [mdi_generate(a, f16, 1, S, K, ["--device", "cuda", "--dtype", "fp16"])[1]["tokens_per_s"]
                for _ in range(2)]
        mine = max(runs)
        fig[f"bench_S{S}"] = {"hf_tokens_per_s": hf, "mdi_tokens_per_s": mine, "ratio": mine / hf}
        say(f"{a.shape} fp16, {S} sample(s) x {K} tokens, 1 GPU: transformers generate {hf:.1f} tokens/s, "
            f"mdi-llm {mine:.1f} tokens/s: {mine / hf:.1f}x")


def shared_runs(a, f16, fig, tag, label):
    K, S = a.bench_tokens, 3
    for ranks in (1, 3):
        _, rep, err = mdi_generate(a, f16, ranks, S, K, ["--device", "cuda", "--dtype", "fp16"])
        fig[f"shared_gpu{tag}_np{ranks}_S{S}"] = {"tokens_per_s": rep["tokens_per_s"], "ranks": [
            {k: r[k] for k in ("layer_begin", "layer_end", "compute_s", "comm_s", "wait_s")}
            for r in rep["rank_stats"]]}
        say(f"np {ranks} sharing the GPU{label}, {S} samples x {K} tokens: {rep['tokens_per_s']:.1f} tokens/s")
        say("\n".join(l for l in err.splitlines() if l.startswith(("split", "rank", "   "))))


def part_shared(a, model, d, fig):
    if not torch.cuda.is_available():
        say("shared: no GPU, skipped")
        return
    f16 = fp16_model(a, d)
    ctl = shutil.which("nvidia-cuda-mps-control")
    # A daemon already running (not this tool's, so left alone) serves every run: they are
    # recorded as MPS runs, and there are none without MPS to compare with.
    if ctl and shutil.which("pgrep") and subprocess.run(["pgrep", "-x", "nvidia-cuda-mps"],
                                                        capture_output=True).returncode == 0:
        say("shared: an MPS daemon already runs (not started here): only runs under it")
        shared_runs(a, f16, fig, "_mps", " under MPS")
        return
    shared_runs(a, f16, fig, "", "")
    if not ctl:
        say("shared: nvidia-cuda-mps-control not found, no MPS runs")
        return
    if not shutil.which("pgrep"):
        say("shared: pgrep not found (cannot tell whether an MPS daemon already runs), no MPS runs")
        return
    p = subprocess.run([ctl, "-d"], capture_output=True, text=True)
    if p.returncode != 0:
        say(f"shared: nvidia-cuda-mps-control -d exited {p.returncode} ({(p.stdout + p.stderr).strip()}), no MPS runs")
        return
    try:
        time.sleep(1)
        shared_runs(a, f16, fig, "_mps", " under MPS")
    finally:
        subprocess.run([ctl], input="quit\n", capture_output=True, text=True)


def fp16_path(a):
    return os.path.join(a.work, f"{a.shape}_fp16.h5")


def remove_fp16(a):
    if os.path.exists(fp16_path(a)):
        os.remove(fp16_path(a))


def fp16_model(a, d):
    """This run's checkpoint converted to fp16, once (bench and shared both use it)."""
    f16 = fp16_path(a)
    if not os.path.exists(f16):
        convert(a, d, f16, "fp16")
    return f16


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--gpt2-vocab", required=True, help="folder with encoder.json + vocab.bpe")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/mdi-compare-hf", help="scratch folder (checkpoints, several GB)")
    ap.add_argument("--shape", choices=SHAPES, default="gpt2-xl")
    ap.add_argument("--parts", default="convert,bench,shared")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=100, help="greedy steps compared (default 100)")
    ap.add_argument("--bench-tokens", type=int, default=256)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    remove_fp16(a)  # left by an earlier run that was killed: another checkpoint
    # A timeout's SIGTERM unwinds like an exception, so an MPS daemon started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    fig = {"shape": a.shape}
    model, d = make_checkpoint(a, a.work)
    rc = 0
    for part in a.parts.split(","):
        try:
            {"convert": part_convert, "bench": part_bench, "shared": part_shared}[part](a, model, d, fig)
        except Exception as e:  # noqa: BLE001 - report and go on with the next part
            say(f"{part}: FAILED: {type(e).__name__}: {e}")
            rc = 1
    with open(os.path.join(a.out, f"compare_hf_{a.shape}.json"), "w") as f:
        json.dump(fig, f, indent=1)
    with open(os.path.join(a.out, f"compare_hf_{a.shape}.log"), "w") as f:
        f.write("\n".join(LOG) + "\n")
    shutil.rmtree(d, ignore_errors=True)
    remove_fp16(a)
    sys.exit(rc)


if __name__ == "__main__":
    main()
