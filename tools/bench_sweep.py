#!/usr/bin/env python3
r"""Benchmark sweep for mdi-llm: runs every combination of ranks x samples x tokens x model, on
loopback (mpirun) or on the emulated gigabit cluster (tools/emucluster.sh), and appends one CSV row
per combination. Python 3 standard library only, so it runs on the boards themselves.
    tools/bench_sweep.py --ranks 1,2,3 --samples-per-rank 1,2 --tokens 200 \
        --model data/shakespeare_char.h5 --out /tmp/bench/bench.csv
    tools/bench_sweep.py --launcher emucluster --ranks 1,2,3 --samples-per-rank 1 --tokens 50 \
        --model /tmp/bench/gpt2.h5 --out /tmp/bench/emu.csv
Next to OUT.csv it keeps a folder OUT_runs/ with each run's timings CSV and report JSON (named in the
row's timings_csv / report_json columns), which tools/plot_bench.py reads.
"""
import argparse
import csv
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_MPIRUN_FLAGS = "--oversubscribe --mca mpi_yield_when_idle 1 --bind-to none"

COLUMNS = [
    "run_id", "model", "n_layer", "n_embd", "vocab", "ranks", "samples", "micro_batches", "tokens",
    "launcher", "rate", "threads", "split", "head_split", "eager_limit",
    "tokens_per_s", "per_sample_tokens_per_s", "ttft_s", "decode_step_s",
    "compute_s", "comm_s", "wait_s",
    "compute_s_total", "compute_s_max", "comm_s_total", "comm_s_max", "wait_s_total", "wait_s_max",
    "busy_fraction", "bytes_per_token_per_hop", "load_s_max", "peak_rss_MB", "peak_rss_MB_max",
    "generated", "gen_s", "wall_s", "pipeline_efficiency", "speedup_vs_1x1",
    "repeats", "tokens_per_s_runs", "cores", "load1", "status", "extra", "timings_csv", "report_json",
    "git", "date",
]


def int_list(s):
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"want a comma list of positive integers, got {s!r}")
    return vals


def split_arg(s):
    """--split 0,4,4,4: layers per rank (as mdi-llm's --layers); its length is the rank count."""
    try:
        vals = [int(x) for x in s.split(",")]
    except ValueError:
        vals = []
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"want layers per rank, e.g. 0,4,4,4, got {s!r}")
    return vals


def str_list(s):
    vals = [x.strip() for x in s.split(",") if x.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("want a comma list of files")
    return vals


def git_describe():
    try:
        r = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--tags"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           universal_newlines=True, timeout=10)   # Python 3.6 on old JetPacks
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def fmt(x, digits=4):
    """Numbers in the CSV: short but with enough significant digits; '' for missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, int):
        return str(x)
    if abs(x) < 1e-3 or abs(x) >= 1e6:
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}".rstrip("0").rstrip(".")


def joined(xs, digits=4):
    return ";".join(fmt(x, digits) for x in xs)


def read_timings(path):
    """{sample: [(tokens, time_s), ...]} from mdi-llm's --timings CSV."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(int(row["sample"]), []).append((int(row["tokens"]), float(row["time_s"])))
    for v in out.values():
        v.sort()
    return out


def decode_step(timings):
    """Median seconds per decode token of one sample: the gaps between consecutive tokens from the
    second token on (the first token's time is the prefill, reported as ttft), pooled over samples."""
    gaps = []
    for pts in timings.values():
        gaps += [b[1] - a[1] for a, b in zip(pts, pts[1:]) if b[0] >= 2]
    return statistics.median(gaps) if gaps else None


def launch_command(a, ranks, samples, tokens, model, threads, report, timings, layers=None):
    """The argv of one run (layers: an explicit split, else mdi-llm's default)."""
    app = [a.bin, "--model", os.path.abspath(model), "--samples", str(samples), "--tokens", str(tokens),
           "--temperature", str(a.temperature), "--seed", str(a.seed),
           "--report-json", report, "--timings", timings]
    if layers:
        app += ["--layers", ",".join(str(x) for x in layers)]
    if a.prompt:
        app += ["--prompt", a.prompt]
    if threads:
        app += ["--threads", str(threads)]
    app += shlex.split(a.extra)
    if a.launcher == "emucluster":
        return ([os.path.join(HERE, "emucluster.sh"), "run", str(ranks), "--rate", a.rate, "--"]
                + shlex.split(a.mpirun_flags or "") + ["-np", str(ranks)] + app)
    if ranks == 1 and a.single == "plain":
        return app
    flags = a.mpirun_flags if a.mpirun_flags is not None else os.environ.get(
        "MDI_MPIRUN_FLAGS", DEFAULT_MPIRUN_FLAGS)
    flags = shlex.split(flags)
    if os.geteuid() == 0 and "--allow-run-as-root" not in flags:
        flags.append("--allow-run-as-root")
    return [a.mpirun] + flags + ["-np", str(ranks)] + app


def run_once(a, argv, report, timings, log):
    """Runs one mdi-llm job; returns (rc, wall seconds). stdout (the samples) is dropped, stderr
    (report, notes) goes to the log file."""
    for p in (report, timings):
        if os.path.exists(p):
            os.remove(p)
    env = dict(os.environ)
    if a.launcher == "emucluster":
        env.setdefault("MDI_EMU_PREFIX", "mdibench")   # not the test suite's namespaces
    t0 = time.monotonic()
    with open(log, "a") as lf:
        lf.write("$ " + " ".join(shlex.quote(x) for x in argv) + "\n")
        lf.flush()
        try:
            r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=lf, env=env,
                               timeout=a.timeout or None)
            rc = r.returncode
        except subprocess.TimeoutExpired:
            rc = 124
            lf.write(f"bench_sweep: timed out after {a.timeout} s\n")
        except OSError as e:
            rc = 127
            lf.write(f"bench_sweep: cannot start: {e}\n")
    return rc, time.monotonic() - t0


def metrics(report, timings):
    """The CSV fields that come from one run's report JSON and timings CSV."""
    rs = sorted(report["rank_stats"], key=lambda r: r["rank"])
    cfg = report["config"]
    smp = report["samples"]
    per_sample = [s["tokens"] / s["total_s"] for s in smp if s["total_s"] > 0]
    rows = sum(r.get("decode_rows", 0) for r in rs)
    dbytes = sum(r.get("decode_bytes", 0) for r in rs)
    mib = [r["peak_rss_bytes"] / 2**20 for r in rs]
    m = {
        "n_layer": cfg["n_layer"], "n_embd": cfg["n_embd"], "vocab": cfg["vocab_size"],
        "micro_batches": report.get("micro_batches"),
        "split": ";".join(str(x) for x in report.get("split", [])),
        "head_split": report.get("head_split", 0),
        "eager_limit": report.get("shm_eager_limit"),
        "threads": ";".join(str(r.get("threads", "")) for r in rs),
        "tokens_per_s": report["tokens_per_s"],
        "per_sample_tokens_per_s": statistics.mean(per_sample) if per_sample else None,
        "ttft_s": statistics.mean(s["ttft_s"] for s in smp) if smp else None,
        "decode_step_s": decode_step(timings),
        "bytes_per_token_per_hop": dbytes / rows if rows else None,
        "load_s_max": max(r["load_s"] for r in rs),
        "peak_rss_MB": joined(mib, 1), "peak_rss_MB_max": max(mib),
        "generated": report["generated"], "gen_s": report["seconds"],
    }
    for k in ("compute_s", "comm_s", "wait_s"):
        xs = [r[k] for r in rs]
        m[k] = joined(xs)
        m[k + "_total"] = sum(xs)
        m[k + "_max"] = max(xs)
    # Share of the ranks' time spent computing: what the pipeline could reach with a core per rank.
    spent = m["compute_s_total"] + m["comm_s_total"] + m["wait_s_total"]
    m["busy_fraction"] = m["compute_s_total"] / spent if spent > 0 else None
    return m


class Csv:
    """Appends rows to OUT.csv, writing the header once (and refusing a file with other columns)."""

    def __init__(self, path):
        self.path = path
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            if header != COLUMNS:
                sys.exit(f"bench_sweep: {path} has other columns (an older version?): "
                         "give a new --out")
        else:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)

    def append(self, row):
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([fmt(row.get(c)) if isinstance(row.get(c), (int, float))
                                    else row.get(c, "") for c in COLUMNS])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=str_list, required=True, help="weight files, comma list")
    ap.add_argument("--ranks", type=int_list, default=[1, 2, 3],
                    help="rank counts with mdi-llm's default split, comma list (default 1,2,3)")
    ap.add_argument("--split", type=split_arg, action="append", default=[], metavar="A,B,..",
                    help="also run this split (mdi-llm --layers; as many ranks as numbers), after "
                         "the --ranks runs; repeatable")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--samples", type=int_list,
                   help="sample counts, comma list (default: samples = ranks)")
    g.add_argument("--samples-per-rank", type=int_list, metavar="K",
                   help="samples = K x ranks, comma list of K")
    ap.add_argument("--tokens", type=int_list, default=[100],
                    help="new tokens per sample, comma list (default 100)")
    ap.add_argument("--out", required=True, help="CSV to append to (header written once)")
    ap.add_argument("--bin", default=os.environ.get("MDI_BIN", os.path.join(ROOT, "build", "mdi-llm")),
                    help="mdi-llm executable (default: env MDI_BIN, else build/mdi-llm)")
    ap.add_argument("--launcher", choices=("mpirun", "emucluster"), default="mpirun",
                    help="mpirun (default): loopback, or a hostfile via --mpirun-flags; "
                         "emucluster: tools/emucluster.sh run N (root)")
    ap.add_argument("--mpirun", default="mpirun", help="the mpirun command (default mpirun)")
    ap.add_argument("--mpirun-flags", default=None,
                    help="flags before -np (default: env MDI_MPIRUN_FLAGS, else "
                         f"'{DEFAULT_MPIRUN_FLAGS}', plus --allow-run-as-root as root; "
                         "with emucluster: added to the tool's own flags)")
    ap.add_argument("--rate", default="1gbit", help="emucluster link rate (default 1gbit)")
    ap.add_argument("--single", choices=("mpirun", "plain"), default="mpirun",
                    help="how ranks=1 runs: through the launcher like the others (default), "
                         "or plain mdi-llm without MPI launcher")
    ap.add_argument("--threads", default="auto",
                    help="--threads per rank; auto: mdi-llm's default (cores / ranks on a host) with "
                         "mpirun, cores / ranks with emucluster (every emulated host sees all cores). "
                         "Default auto")
    ap.add_argument("--prompt", default="ROMEO:",
                    help="prompt (default ROMEO:; '' = mdi-llm's own default)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="sampling temperature (default 0 = greedy)")
    ap.add_argument("--seed", type=int, default=1337, help="default 1337")
    ap.add_argument("--extra", default="",
                    help="more mdi-llm flags, one string: --extra='--micro-batches 1'")
    ap.add_argument("--repeat", type=int, default=1, help="runs per combination (default 1)")
    ap.add_argument("--pick", choices=("best", "median"), default="best",
                    help="which of the repeats makes the row, by aggregate tokens/s (default best)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per run, 0 = none")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = ap.parse_args(argv)

    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if a.threads != "auto" and not (a.threads.isdigit() and int(a.threads) > 0):
        ap.error("--threads wants a positive integer or 'auto'")
    if not a.dry_run:
        if not os.access(a.bin, os.X_OK):
            ap.error(f"no executable {a.bin} (build it, or give --bin / MDI_BIN)")
        for m in a.model:
            if not os.path.isfile(m):
                ap.error(f"no model file {m}")

    if os.sep in a.bin:
        a.bin = os.path.abspath(a.bin)
    out = os.path.abspath(a.out)
    base = os.path.splitext(out)[0]
    runs_dir = base + "_runs"
    if not a.dry_run:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        os.makedirs(runs_dir, exist_ok=True)
        table = Csv(out)
    log = base + ".log"
    git = git_describe()
    cores = os.cpu_count() or 1

    def sample_counts(ranks):
        if a.samples_per_rank:
            return sorted({k * ranks for k in a.samples_per_rank})
        return sorted(set(a.samples)) if a.samples else [ranks]

    combos = []
    for model in a.model:
        for tokens in a.tokens:
            for ranks in sorted(set(a.ranks)):
                combos += [(model, tokens, ranks, s, None) for s in sample_counts(ranks)]
            for layers in a.split:
                combos += [(model, tokens, len(layers), s, layers) for s in sample_counts(len(layers))]

    baseline = {}   # (model, tokens) -> tokens/s of 1 rank, 1 sample in this sweep
    failed = 0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for i, (model, tokens, ranks, samples, layers) in enumerate(combos, 1):
        stem = os.path.splitext(os.path.basename(model))[0]
        run_id = f"{stamp}-{i:03d}-{stem}-r{ranks}-s{samples}-t{tokens}"
        if layers:
            run_id += "-L" + "_".join(str(x) for x in layers)
        if a.threads == "auto":
            threads = max(1, cores // ranks) if a.launcher == "emucluster" else None
        else:
            threads = int(a.threads)
        report = os.path.join(runs_dir, run_id + ".json")
        timings = os.path.join(runs_dir, run_id + ".csv")
        if a.dry_run:
            cmd = launch_command(a, ranks, samples, tokens, model, threads, report, timings, layers)
            print(" ".join(shlex.quote(x) for x in cmd))
            continue

        load1 = round(os.getloadavg()[0], 2)   # the machine's load just before the run
        results = []   # (tokens_per_s, metrics, wall, k)
        rc_bad = 0
        for k in range(a.repeat):
            rep_r = report if a.repeat == 1 else f"{report[:-5]}.rep{k}.json"
            rep_t = timings if a.repeat == 1 else f"{timings[:-4]}.rep{k}.csv"
            cmd = launch_command(a, ranks, samples, tokens, model, threads, rep_r, rep_t, layers)
            rc, wall = run_once(a, cmd, rep_r, rep_t, log)
            if rc != 0 or not os.path.exists(rep_r):
                rc_bad = rc or 1
                continue
            try:
                with open(rep_r) as f:
                    rep = json.load(f)
                m = metrics(rep, read_timings(rep_t) if os.path.exists(rep_t) else {})
            except (OSError, ValueError, KeyError) as e:
                rc_bad = 1
                with open(log, "a") as lf:
                    lf.write(f"bench_sweep: unreadable report {rep_r}: {e}\n")
                continue
            results.append((m["tokens_per_s"], m, wall, k))

        row = {"run_id": run_id, "model": model, "ranks": ranks, "samples": samples,
               "tokens": tokens, "launcher": a.launcher,
               "rate": a.rate if a.launcher == "emucluster" else "",
               "threads": threads or "", "repeats": a.repeat, "cores": cores,
               "load1": load1, "extra": a.extra, "git": git,
               "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if not results:
            failed += 1
            row["status"] = f"failed rc={rc_bad}"
            table.append(row)
            print(f"[{i}/{len(combos)}] {stem} ranks={ranks} samples={samples} tokens={tokens}: "
                  f"FAILED (rc={rc_bad}, see {log})", flush=True)
            continue
        ranked = sorted(results, key=lambda r: r[0])
        chosen = ranked[-1] if a.pick == "best" else ranked[(len(ranked) - 1) // 2]
        tps, m, wall, k = chosen
        if a.repeat > 1:   # keep the chosen run's files under the run's name, drop the others
            for _, _, _, j in results:
                for ext, dst in ((".json", report), (".csv", timings)):
                    src = f"{dst[:-len(ext)]}.rep{j}{ext}"
                    if j == k and os.path.exists(src):
                        os.replace(src, dst)
                    elif os.path.exists(src):
                        os.remove(src)
        row.update(m)
        row.update({"wall_s": wall, "status": "ok" if rc_bad == 0 else f"ok ({len(results)} of "
                    f"{a.repeat} runs)", "tokens_per_s_runs": joined([r[0] for r in results], 5),
                    "timings_csv": os.path.relpath(timings, os.path.dirname(out)),
                    "report_json": os.path.relpath(report, os.path.dirname(out))})
        key = (model, tokens)
        if ranks == 1 and samples == 1 and not layers:
            baseline[key] = tps
        if key in baseline:
            row["speedup_vs_1x1"] = tps / baseline[key]
            if samples == ranks:
                row["pipeline_efficiency"] = tps / (ranks * baseline[key])
        table.append(row)
        eff = row.get("pipeline_efficiency")
        print(f"[{i}/{len(combos)}] {stem} ranks={ranks} samples={samples} tokens={tokens} "
              f"split {m['split']}: {tps:.2f} tok/s aggregate, {m['per_sample_tokens_per_s']:.2f} per sample, "
              f"ttft {m['ttft_s']:.3f} s, step {fmt(m['decode_step_s'])} s, "
              f"wait max {m['wait_s_max']:.2f} s"
              + (f", efficiency {eff:.2f}" if eff is not None else "")
              + f", wall {wall:.1f} s", flush=True)
    if not a.dry_run:
        print(f"bench_sweep: {len(combos) - failed} of {len(combos)} runs ok -> {out} "
              f"(per-run timings and reports in {runs_dir}, log {log})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
