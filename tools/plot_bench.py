#!/usr/bin/env python3
"""Plots from tools/bench_sweep.py's CSV (and the per-run timings CSVs it names): writes PNGs of
(a) time vs generated tokens, one line per number of ranks (samples = ranks), (b) aggregate
throughput vs ranks, one line per samples-per-rank, with the ideal N x (1 rank, 1 sample) line,
(c) per-rank compute / communication / wait seconds of one run, and with --combined all three in one.
    /usr/bin/python3 tools/plot_bench.py /tmp/bench/bench.csv --outdir /tmp/bench/plots
Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def num(s, cast=float):
    try:
        return cast(s)
    except (TypeError, ValueError):
        return None


def load_rows(paths):
    rows = []
    for p in paths:
        with open(p, newline="") as f:
            for r in csv.DictReader(f):
                if not r.get("status", "").startswith("ok"):
                    continue
                r["_dir"] = os.path.dirname(os.path.abspath(p))
                for k in ("ranks", "samples", "tokens", "n_layer", "n_embd", "vocab"):
                    r[k] = num(r.get(k), int)
                for k in ("tokens_per_s", "pipeline_efficiency", "ttft_s", "decode_step_s"):
                    r[k] = num(r.get(k))
                r["_model"] = os.path.splitext(os.path.basename(r["model"]))[0]
                rows.append(r)
    return rows


def read_timings(row):
    """{sample: ([tokens], [time_s])} of one run, or {} when its timings CSV is missing."""
    p = row.get("timings_csv", "")
    if not p:
        return {}
    p = p if os.path.isabs(p) else os.path.join(row["_dir"], p)
    if not os.path.exists(p):
        print(f"plot_bench: no timings file {p}", file=sys.stderr)
        return {}
    out = defaultdict(lambda: ([], []))
    with open(p, newline="") as f:
        for r in csv.DictReader(f):
            t = out[int(r["sample"])]
            t[0].append(int(r["tokens"]))
            t[1].append(float(r["time_s"]))
    return dict(out)


def setting(rows):
    """A short description of the selected runs for titles."""
    r = rows[0]
    where = "loopback" if r["launcher"] == "mpirun" else f"emulated cluster, {r['rate']} links"
    loads = [x for x in (num(q.get("load1")) for q in rows) if x is not None]
    host = (f"; host {r['cores']} cores, load {min(loads):.1f}-{max(loads):.1f}"
            if loads and r.get("cores") else "")
    return (f"{r['_model']} ({r['n_layer']} layers, C={r['n_embd']}, V={r['vocab']}), {where}{host}")


def best_per_key(rows, key):
    """Rows grouped by key(row); where the sweep ran a combination twice, the faster row."""
    out = {}
    for r in rows:
        k = key(r)
        if k not in out or (r["tokens_per_s"] or 0) > (out[k]["tokens_per_s"] or 0):
            out[k] = r
    return out


def plot_time_vs_tokens(ax, rows, spr):
    """(a) mean time over the samples at each generated-token count, one line per rank count, for
    samples = spr x ranks; the band spans the fastest to the slowest sample."""
    sel = best_per_key([r for r in rows if r["samples"] == spr * r["ranks"]], lambda r: r["ranks"])
    drawn = 0
    for i, n in enumerate(sorted(sel)):
        r = sel[n]
        tim = read_timings(r)
        if not tim:
            continue
        by_tok = defaultdict(list)
        for toks, ts in tim.values():
            for k, t in zip(toks, ts):
                by_tok[k].append(t)
        ks = sorted(by_tok)
        mean = [sum(by_tok[k]) / len(by_tok[k]) for k in ks]
        c = COLORS[i % len(COLORS)]
        label = (f"{n} rank{'s' if n > 1 else ''}, {r['samples']} "
                 f"sample{'s' if r['samples'] > 1 else ''}: {r['tokens_per_s']:.1f} tok/s")
        ax.plot(ks, mean, color=c, lw=2, label=label)
        if r["samples"] > 1:
            ax.fill_between(ks, [min(by_tok[k]) for k in ks], [max(by_tok[k]) for k in ks],
                            color=c, alpha=0.15, lw=0)
        drawn += 1
    ax.set_xlabel("tokens generated per sample")
    ax.set_ylabel("time since start of generation (s)")
    ax.set_title(f"Time vs generated tokens (samples = {f'{spr} x ' if spr > 1 else ''}ranks)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if drawn:
        multi = any(r["samples"] > 1 for r in sel.values())
        ax.legend(title="mean over samples; band: fastest..slowest" if multi else None,
                  fontsize=9, title_fontsize=9, loc="upper left")
    return drawn


def plot_throughput(ax, rows):
    """(b) aggregate tokens/s vs ranks, one line per samples-per-rank (or per sample count when
    the sweep's sample counts are not multiples of the rank counts), and the ideal line."""
    by_spr = all(r["samples"] % r["ranks"] == 0 for r in rows)
    sel = best_per_key(rows, lambda r: (r["samples"] // r["ranks"] if by_spr else r["samples"],
                                        r["ranks"]))
    groups = defaultdict(list)
    for (g, n), r in sel.items():
        groups[g].append((n, r))
    all_ranks = sorted({n for (_, n) in sel})
    for i, g in enumerate(sorted(groups)):
        pts = sorted(groups[g], key=lambda p: p[0])
        label = ((f"samples = {g} x ranks" if g > 1 else "samples = ranks") if by_spr
                 else f"{g} sample{'s' if g > 1 else ''}")
        ax.plot([p[0] for p in pts], [p[1]["tokens_per_s"] for p in pts], "o-", lw=2,
                color=COLORS[i % len(COLORS)], label=label)
        for n, r in pts:
            eff = r["pipeline_efficiency"]
            if eff is not None and n > 1:
                ax.annotate(f"eff {eff:.2f}", (n, r["tokens_per_s"]), textcoords="offset points",
                            xytext=(6, -14), fontsize=9, color=COLORS[i % len(COLORS)],
                            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    base = sel.get((1, 1))
    if base:
        ideal = [n * base["tokens_per_s"] for n in all_ranks]
        ax.plot(all_ranks, ideal, "--", color="grey", lw=1.5,
                label="ideal: N x (1 rank, 1 sample)")
    ax.set_xticks(all_ranks)
    ax.set_xlim(all_ranks[0] - 0.25, all_ranks[-1] + 0.45)   # room for the last annotation
    ax.set_xlabel("ranks (nodes)")
    ax.set_ylabel("aggregate tokens/s")
    ax.set_title("Throughput vs ranks")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")


def plot_rank_times(ax, row):
    """(c) per-rank compute / communication / wait seconds of one run, stacked."""
    parts = [("compute_s", "compute", COLORS[0]), ("comm_s", "communication", COLORS[1]),
             ("wait_s", "wait (idle)", COLORS[7 % len(COLORS)])]
    vals = {k: [float(x) for x in row[k].split(";")] for k, _, _ in parts}
    n = len(vals["compute_s"])
    xs = list(range(n))
    bottom = [0.0] * n
    for k, label, c in parts:
        ax.bar(xs, vals[k], bottom=bottom, color=c, label=label, width=0.6)
        bottom = [b + v for b, v in zip(bottom, vals[k])]
    split = row.get("split", "").split(";")
    ax.set_xticks(xs)
    def label(i):
        layers = split[i] if i < len(split) else "?"
        if i == 0:
            return "rank 0\nhead only" if layers == "0" else f"rank 0\nhead + {layers} layers"
        return f"rank {i}\n{layers} layers"
    ax.set_xticklabels([label(i) for i in xs])
    ax.set_ylabel("seconds")
    ax.set_title(f"Time per rank: {row['ranks']} ranks, {row['samples']} samples")
    ax.set_ylim(0, max(bottom) * 1.18)   # room for the legend above the bars
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=9, loc="upper center", ncol=3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="+", help="bench_sweep.py CSV files")
    ap.add_argument("--outdir", default=".", help="where the PNGs go")
    ap.add_argument("--prefix", default="", help="file name prefix (default: the model's name)")
    ap.add_argument("--model", help="a substring of the model path (default: the first row's)")
    ap.add_argument("--launcher", help="mpirun or emucluster (default: the first selected row's)")
    ap.add_argument("--tokens", type=int, help="tokens per sample (default: the largest)")
    ap.add_argument("--spr", type=int, default=1, help="(a): samples per rank of the lines")
    ap.add_argument("--run", help="(c): run_id (default: most ranks with samples = ranks)")
    ap.add_argument("--combined", action="store_true", help="also one PNG with all three panels")
    ap.add_argument("--dpi", type=int, default=100)
    a = ap.parse_args(argv)

    rows = load_rows(a.csv)
    if not rows:
        sys.exit("plot_bench: no successful runs in the CSV")
    if a.model:
        rows = [r for r in rows if a.model in r["model"]]
    else:
        rows = [r for r in rows if r["model"] == rows[0]["model"]]
    if not rows:
        sys.exit(f"plot_bench: no runs of a model matching {a.model!r}")
    launcher = a.launcher or rows[0]["launcher"]
    rows = [r for r in rows if r["launcher"] == launcher]
    tokens = a.tokens or max(r["tokens"] for r in rows)
    rows = [r for r in rows if r["tokens"] == tokens]
    if not rows:
        sys.exit(f"plot_bench: no {launcher} runs with {tokens} tokens")
    if a.run:
        pick = [r for r in rows if r["run_id"] == a.run]
        if not pick:
            sys.exit(f"plot_bench: no run {a.run} among the selected rows")
        run = pick[0]
    else:
        eq = [r for r in rows if r["samples"] == r["ranks"]] or rows
        run = max(eq, key=lambda r: (r["ranks"], r["tokens_per_s"] or 0))

    os.makedirs(a.outdir, exist_ok=True)
    prefix = a.prefix or rows[0]["_model"]
    note = setting(rows)
    written = []

    def save(fig, name):
        p = os.path.join(a.outdir, f"{prefix}_{name}.png")
        fig.savefig(p, dpi=a.dpi)
        plt.close(fig)
        written.append(p)

    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    if plot_time_vs_tokens(ax, rows, a.spr):
        fig.suptitle(note, fontsize=10)
        save(fig, "time_vs_tokens")
    else:
        plt.close(fig)
        print("plot_bench: no timings for (a); skipped", file=sys.stderr)
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    plot_throughput(ax, rows)
    fig.suptitle(f"{note}, {tokens} tokens per sample", fontsize=10)
    save(fig, "throughput")
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    plot_rank_times(ax, run)
    fig.suptitle(note, fontsize=10)
    save(fig, "rank_times")
    if a.combined:
        fig, axs = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
        plot_time_vs_tokens(axs[0], rows, a.spr)
        plot_throughput(axs[1], rows)
        plot_rank_times(axs[2], run)
        fig.suptitle(f"mdi-llm: {note}, {tokens} tokens per sample", fontsize=12)
        save(fig, "summary")
    for p in written:
        print(p)


if __name__ == "__main__":
    main()
