#!/usr/bin/env python3
"""MPI tests of mdi-llm, run by ctest (tests/mpi/CMakeLists.txt).

same-tokens: N ranks produce exactly the token ids of 1 rank (started without mpirun), greedy and
             seeded sampling, S = N, S > N (micro-batches), S < N, past block_size, explicit splits.
bad-input:   each bad input ends every rank quickly, non-zero, with one clear error line.
report:      the report, --output JSONL and --timings CSV say what the run did.
kill-rank:   a rank killed mid-run ends the whole job quickly, with a message naming rank and host.
long:        10,000 tokens per sample (past block_size ~300 times) with flat peak memory.
sweep:       tools/bench_sweep.py writes one CSV row per run with the report's figures, and
             tools/plot_bench.py draws PNGs from it (where a Python with matplotlib is found).
cuda:        1 to N ranks sharing the GPU(s) give the tokens of 1 rank on a GPU, per dtype; N ranks
             on one GPU get the report's shared-GPU note (none under MPS); mixed --device lists
             run. Exit 77 (skipped) where mdi-llm sees no CUDA device.
Only the standard library: CI's Python has no numpy.
"""
import argparse
import csv
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def run(cmd, timeout=300, **kw):
    """Runs cmd, capturing its output; extra keywords go to subprocess.run (env, preexec_fn).
    Returns the process and its seconds."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, **kw)
    return p, time.monotonic() - t0


# Under the sanitizers (MDI_SANITIZE builds; the tests get ASAN_OPTIONS) mdi-llm's read guard
# leaves fatal signals to AddressSanitizer, whose report is worth more to whoever runs that build.
# The files that make libhdf5 itself overrun a buffer (tests/fuzz/regressions/fuzz_h5/hdf5_*) then
# end the job with ASan's report of the bug inside the library instead of mdi-llm's one line.
SANITIZED = "ASAN_OPTIONS" in os.environ
# Seconds a bad-input job may take to end: 10, the product's promise. A sanitized rank starts
# ~2 s slower (ASan's start-up, -O1 code), so there a 6-rank job on 2 cores took 11.1-11.8 s to
# start and refuse; the limit doubles where the build, not the product, is slow.
BAD_INPUT_S = 20 if SANITIZED else 10


def hdf5_bug(path):
    return SANITIZED and os.path.basename(path).startswith("hdf5_")


def error_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("mdi-llm: error") or l.startswith("error:")]


def expect_error(name, cmd, expect, timeout=60, asan_report=False, limit=BAD_INPUT_S, **kw):
    """Runs the job of a bad input: it must end within `limit` seconds, exit non-zero and
    print one error line containing `expect` (a string, or a tuple of strings all of which it
    contains; or, with asan_report, may end with AddressSanitizer's report instead).
    Extra keywords go to run."""
    expect = (expect,) if isinstance(expect, str) else expect
    try:
        p, secs = run(cmd, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        check(False, f"{name}: job ended (it hung for {timeout} s)")
        return
    errors = error_lines(p.stderr)
    ok = p.returncode != 0 and secs < limit and len(errors) == 1 and all(e in errors[0] for e in expect)
    what = "one error line mentioning " + " and ".join(f"'{e}'" for e in expect)
    if asan_report and not ok:
        ok = p.returncode != 0 and secs < limit and "AddressSanitizer" in p.stderr
        what = "AddressSanitizer's report of the bug in libhdf5"
    check(ok, f"{name}: exit {p.returncode} in {secs:.1f} s, {what}"
              + ("" if ok else f"\n     stderr: {p.stderr.strip()[-1500:]}"))


class Runner:
    def __init__(self, args):
        self.exe = args.exe
        self.fixtures = args.fixtures
        words = shlex.split(args.mpiexec)
        self.mpiexec, self.np_flag = words[:-1], words[-1]
        self.tmp = tempfile.mkdtemp(prefix="mdi-mpi-test-")
        self.count = 0

    def model(self, name):
        return os.path.join(self.fixtures, name)

    def cmd(self, ranks, flags):
        base = [self.exe] if ranks == 0 else self.mpiexec + [self.np_flag, str(ranks), self.exe]
        return base + flags

    def tokens(self, ranks, flags, env=None, stdin=None):
        """Runs mdi-llm (with the text stdin on its standard input) and returns the token ids of
        each sample (from --output)."""
        self.count += 1
        out = os.path.join(self.tmp, f"run{self.count}.jsonl")
        p, _ = run(self.cmd(ranks, flags + ["--output", out]), env=env, input=stdin)
        if p.returncode != 0:
            print(p.stdout[-2000:], p.stderr[-4000:], sep="\n")
            return None
        with open(out, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        return [r["tokens"] for r in sorted(rows, key=lambda r: r["id"])]


def same_tokens(r, N):
    greedy = ["--temperature", "0"]
    sampled = ["--temperature", "0.9", "--top-k", "20", "--top-p", "0.95", "--seed", "4242"]
    prompts = ["--prompt", "First Citizen:", "--prompt", "ok!\n"]
    tiny = ["--model", r.model("tiny_gpt2.h5")]
    past_block = ["--tokens", "100"]  # block_size 32: three windows and more
    cases = []
    for S in sorted({max(1, N - 1), N, 2 * N + 1}):
        for name, s in (("greedy", greedy), ("sampled", sampled)):
            cases.append((f"S={S} {name}", tiny + prompts + s + past_block + ["--samples", str(S)]))
    S = 2 * N + 1
    for M in (1, 2):
        cases.append((f"S={S} --micro-batches {M}",
                      tiny + prompts + sampled + past_block + ["--samples", str(S), "--micro-batches", str(M)]))
    explicit = {2: "0,4", 3: "0,2,2", 4: "1,1,1,1"}[N]
    cases.append((f"--layers {explicit}", tiny + prompts + sampled + ["--tokens", "60", "--samples", str(N),
                                                                       "--layers", explicit]))
    # The head split: the last rank computes the last rows of the lm_head (tiny_gpt2: 39 ids) and
    # sends their logits back with the activations; one row, most, all, and none of them.
    for rows in ("1", "30", "39", "0"):
        cases.append((f"--head-split {rows}", tiny + prompts + sampled + past_block +
                      ["--samples", str(N + 1), "--head-split", rows]))
    cases.append(("--head-split 7, untied lm_head", ["--model", r.model("tiny_nanogpt.h5"), "--prompt", "First"] +
                  sampled + ["--tokens", "40", "--samples", str(N), "--head-split", "7"]))
    cases.append(("--head-split 7, fp16 weights", ["--model", r.model("tiny_gpt2_fp16.h5")] + prompts + greedy +
                  ["--tokens", "50", "--samples", str(N), "--head-split", "7"]))
    cases.append(("nanogpt (bias=0, untied lm_head)",
                  ["--model", r.model("tiny_nanogpt.h5"), "--prompt", "First"] + sampled +
                  ["--tokens", "40", "--samples", str(N + 1)]))
    cases.append(("fp16 weights", ["--model", r.model("tiny_gpt2_fp16.h5")] + prompts + greedy +
                  ["--tokens", "50", "--samples", str(N)]))
    for name, flags in cases:
        ref_flags = list(flags)  # 1 rank owns all layers and the whole lm_head
        for opt in ("--layers", "--head-split"):
            if opt in ref_flags:
                del ref_flags[ref_flags.index(opt):ref_flags.index(opt) + 2]
        ref = r.tokens(0, ref_flags)
        got = r.tokens(N, flags)
        check(ref is not None and got is not None and len(ref) > 0 and ref == got,
              f"np {N}, {name}: token ids equal to 1 rank ({len(ref or [])} samples)")
    # Micro-batches that came back together share one lm_head pass. The test hook makes rank 0
    # wait for them, so that every pass takes several: the tokens stay those of 1 rank, and the
    # report counts more micro-batches finished than passes.
    gather = dict(os.environ, MDI_TEST_GATHER_HEAD="1")
    rep = os.path.join(r.tmp, "gather.json")
    flags = tiny + prompts + sampled + past_block + ["--samples", str(2 * N)]
    ref, got = r.tokens(0, flags), r.tokens(N, flags + ["--report-json", rep], env=gather)
    head = json.load(open(rep, encoding="utf-8"))["rank_stats"][0] if got is not None else {}
    passes, mbs = head.get("head_passes", 0), head.get("head_micro_batches", 0)
    check(ref is not None and ref == got and mbs > passes > 0,
          f"np {N}, micro-batches finished together ({mbs:.0f} in {passes:.0f} lm_head passes): "
          "token ids equal to 1 rank")
    # Every message in a rendezvous protocol (Open MPI's shared memory with a 128-byte eager limit
    # and no single-copy support): the sends complete while their ranks compute (the backend moves
    # them on, Backend::set_progress), and the tokens stay those of 1 rank.
    rndv = dict(os.environ, OMPI_MCA_btl_vader_eager_limit="128", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    flags = tiny + prompts + sampled + past_block + ["--samples", str(2 * N)]
    ref, got = r.tokens(0, flags), r.tokens(N, flags, env=rndv)
    check(ref is not None and ref == got, f"np {N}, rendezvous messages: token ids equal to 1 rank")
    # --eval: the same loss on N ranks as on 1, and the PyTorch reference's (tools/make_fixtures.py).
    ref = json.load(open(os.path.join(r.fixtures, "eval_ref.json"), encoding="utf-8"))
    text = os.path.join(r.tmp, "eval.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write(ref["text"])
    for model, want in ref["loss"].items():
        got = []
        for ranks, env, path in ((0, None, text), (N, None, text), (N, gather, text), (N, None, "-")):
            p, _ = run(r.cmd(ranks, ["--model", r.model(model), "--eval", path, "--samples", "3"]), env=env,
                       input=ref["text"] if path == "-" else None)
            m = re.search(r"eval loss ([\d.]+)", p.stdout)
            got.append(m.group(1) if p.returncode == 0 and m else None)
        check(got[0] is not None and got[0] == got[1] == got[2] == got[3] and abs(float(got[0]) - want) < 1e-5,
              f"np {N}, --eval {model}: loss {got[1]} (micro-batches finished together: {got[2]}; the text "
              f"on standard input: {got[3]}) equals 1 rank's {got[0]} and PyTorch's {want:.6f}")
    # --stream writes each sample as it is generated: stdout holds the bytes of 1 rank that wrote
    # everything at the end (several samples, past block_size, one sample).
    for S in (2 * N + 1, 1):
        flags = tiny + prompts + sampled + past_block + ["--samples", str(S)]
        (ref, _), (got, _) = run(r.cmd(0, flags)), run(r.cmd(N, flags + ["--stream"]))
        check(ref.returncode == 0 and got.returncode == 0 and len(ref.stdout) > 100 and got.stdout == ref.stdout,
              f"np {N}, --stream, {S} samples: stdout equal to 1 rank's without it ({len(got.stdout)} characters)")
    # --prompts-file - reads the prompts on rank 0's standard input (mpirun forwards it there).
    flags = tiny + sampled + ["--tokens", "40", "--samples", str(N + 1)]
    ref = r.tokens(0, flags + prompts)
    got = r.tokens(N, flags + ["--prompts-file", "-"], stdin='First Citizen:\n{"prompt": "ok!\\n"}\n')
    check(ref is not None and got is not None and got == ref,
          f"np {N}, --prompts-file - (standard input): token ids equal to --prompt's on 1 rank")
    # The invariant is worth something only if sampling really depends on the seed.
    a = r.tokens(0, tiny + prompts + sampled + ["--samples", "2", "--tokens", "40"])
    b = r.tokens(0, tiny + prompts + sampled[:-1] + ["7", "--samples", "2", "--tokens", "40"])
    check(a is not None and b is not None and a != b, "a different seed gives different tokens")


def bad_input(r, N):
    tmp = r.tmp
    good = r.model("tiny_gpt2.h5")
    trunc = os.path.join(tmp, "truncated.h5")
    with open(good, "rb") as f, open(trunc, "wb") as g:
        g.write(f.read()[: os.path.getsize(good) // 2])
    text = os.path.join(tmp, "not_hdf5.h5")
    with open(text, "w") as f:
        f.write("this is not a model\n")
    base = ["--tokens", "5", "--prompt", "First"]
    cases = [
        ("missing model file", N, ["--model", os.path.join(tmp, "nope.h5")] + base, "no such file"),
        ("not an HDF5 file", N, ["--model", text] + base, "not an HDF5 file"),
        ("truncated model file", N, ["--model", trunc] + base, trunc),
        ("--layers does not sum", N, ["--model", good, "--layers", "1,1,1"] + base, "--layers"),
        ("--layers wrong count", N, ["--model", good, "--layers", "2,2"] + base, "--layers"),
        ("--head-split beyond the vocabulary", N, ["--model", good, "--head-split", "40"] + base,
         "--head-split 40: expected 0 to the model's vocab_size 39"),
        ("--head-split with --eval", N, ["--model", good, "--head-split", "3", "--eval", good],
         "--eval computes every row's logits on rank 0"),
        ("--head-split not a number", N, ["--model", good, "--head-split", "-2"] + base, "--head-split"),
        ("more ranks than layers + 1", 6, ["--model", good] + base, "ranks"),
        ("--top-p out of range", N, ["--model", good, "--top-p", "2"] + base, "--top-p"),
        ("--samples 0", N, ["--model", good, "--samples", "0"] + base, "--samples"),
        ("unknown flag", N, ["--model", good, "--frobnicate"] + base, "frobnicate"),
        ("--model without a file", N, base + ["--model"], "--model"),
        ("prompt outside the vocabulary", N, ["--model", good, "--tokens", "5", "--prompt", "snow \u2603"],
         "prompt 0"),
        ("prompt longer than block_size", N, ["--model", good, "--tokens", "5", "--prompt", "First Citizen: ok! " * 4],
         "prompt 0 has 76 tokens, more than the model's block_size 32"),
        ("empty prompt", N, ["--model", good, "--tokens", "5", "--prompt", ""], "empty"),
        ("missing prompts file", N, ["--model", good, "--prompts-file", os.path.join(tmp, "none.txt")],
         "--prompts-file"),
        ("--eval of a directory", N, ["--model", good, "--eval", tmp], "it is a directory"),
        ("--prompt with --eval", N, ["--model", good, "--eval", tmp, "--prompt", "x"], "excludes"),
        ("unwritable --output", N, ["--model", good, "--output", os.path.join(tmp, "no/dir/x.jsonl")] + base,
         "--output"),
    ]
    # Corrupt model files the fuzzer found (tests/fuzz/regressions/fuzz_h5, models of one layer:
    # 2 ranks), two of which make HDF5 itself crash or spin: each ends every rank with one error
    # line naming the file (under the sanitizers, those two may end it with ASan's report instead).
    regress = os.path.join(r.fixtures, "..", "fuzz", "regressions", "fuzz_h5")
    corrupt = [os.path.join(regress, f) for f in sorted(os.listdir(regress))] if os.path.isdir(regress) else []
    for path in corrupt:
        cases.append((f"corrupt file {os.path.basename(path)}", 2,  # their vocabulary: a, b, c, \\n
                      ["--model", path, "--tokens", "5", "--prompt", "ab"], path))
    for name, ranks, flags, expect in cases:
        expect_error(name, r.cmd(ranks, flags), expect, asan_report=hdf5_bug(expect))
    # An absurd --tokens: the room for the results does not fit (address space capped at 4 GB,
    # inherited by mpirun's ranks; not under ASan, whose shadow memory needs more).
    if not SANITIZED:
        def cap():
            resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        expect_error("--tokens 2000000000 in 4 GB", r.cmd(N, ["--model", good, "--tokens", "2000000000",
                                                            "--samples", str(N)]),
                     "out of memory", preexec_fn=cap)
    # A read of the model file that never returns (HDF5 spinning on a corrupt file; simulated by
    # the test hook MDI_TEST_STALL_READ_S) ends the job within seconds with one error line: rank
    # 0's where every rank hangs (after 5 s), the rank's own where only its copy of the file is bad
    # (after 2 s more).
    stall = r.cmd(N, ["--model", good] + base)
    expect_error("a read that hangs", stall, ("error: reading", "did not return"), timeout=30,
                 env=dict(os.environ, MDI_TEST_STALL_READ_S="60"))
    expect_error("a read that hangs on the last rank", stall, (f"error on rank {N - 1} (", "did not return"),
                 timeout=30, limit=BAD_INPUT_S + 2, env=dict(os.environ, MDI_TEST_STALL_READ_S=f"60@{N - 1}"))
    # --tokenize reads only the tokenizer: it works where that part of the file is sound, and
    # otherwise fails like generation.
    for path in corrupt:
        try:
            p = subprocess.run([r.exe, "--model", path, "--tokenize"], input="abc", capture_output=True,
                               text=True, errors="replace", timeout=10)
        except subprocess.TimeoutExpired:
            check(False, f"--tokenize with {os.path.basename(path)}: ended (it hung for 10 s)")
            continue
        errors = error_lines(p.stderr)
        ok = (p.returncode == 0 and not errors) or (p.returncode == 1 and len(errors) == 1 and path in errors[0])
        what = ", one error line naming the file" if p.returncode else ""
        if hdf5_bug(path) and not ok:
            ok = p.returncode != 0 and "AddressSanitizer" in p.stderr
            what = ", AddressSanitizer's report of the bug in libhdf5"
        check(ok, f"--tokenize with {os.path.basename(path)}: exit {p.returncode}{what}"
                  + ("" if ok else f"\n     stderr: {p.stderr.strip()[-800:]}"))


def kill_rank(r, N):
    """A rank killed during generation ends the whole job within 10 s, and the message names the
    rank and the host (Open MPI's mpirun reports it; no rank is left waiting in a receive). With
    --stream, the text generated until then is on stdout."""
    marker = "918273645"  # a seed no other test uses, to find this job's processes
    cmd = r.cmd(N, ["--model", r.model("tiny_gpt2.h5"), "--prompt", "First", "--samples", str(N),
                    "--tokens", "100000000", "--seed", marker, "--stream"])
    streamed = os.path.join(r.tmp, "streamed.txt")
    with open(streamed, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    pids = []
    deadline = time.monotonic() + 30
    while len(pids) < N and time.monotonic() < deadline:
        time.sleep(0.5)
        out = subprocess.run(["pgrep", "-f", f"{os.path.basename(r.exe)} .*--seed {marker}"],
                             capture_output=True, text=True).stdout.split()
        pids = sorted(int(p) for p in out if int(p) != proc.pid)
    check(len(pids) >= N, f"found the {N} ranks' processes ({len(pids)})")
    if len(pids) < N:
        proc.kill()
        return
    # Well into generation: --stream has written sample 0's first tokens (a sanitized build's ranks
    # take seconds to start).
    head = b"--- sample 0 (prompt 0) ---\nFirst"
    deadline = time.monotonic() + 30
    while os.path.getsize(streamed) <= len(head) + 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    before = os.path.getsize(streamed)
    victim = pids[-1]
    t0 = time.monotonic()
    os.kill(victim, 9)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        check(False, "the job ended after a rank was killed (it hung for 30 s)")
        return
    secs = time.monotonic() - t0
    print(f"[ figure ] killed pid {victim} of {N} ranks: job exited with {proc.returncode} after {secs:.2f} s")
    host = os.uname().nodename
    check(proc.returncode != 0 and secs < 10, f"job exit {proc.returncode} within 10 s of the kill ({secs:.2f} s)")
    check(re.search(r"process rank \d+ .* on node \S+ exited on signal 9", err) is not None and host in err,
          "the message names the rank and the host" + ("" if host in err else f"\n{err[-800:]}"))
    left = subprocess.run(["pgrep", "-f", f"--seed {marker}"], capture_output=True, text=True).stdout.split()
    check(not left, f"no process of the job is left ({left})")
    with open(streamed, "rb") as f:
        text = f.read()
    check(text.startswith(head) and before > len(head) + 16 and len(text) >= before,
          f"--stream: sample 0's text came out while it was generated ({before - len(head)} bytes after its "
          f"prompt before the kill), and stays ({len(text) - len(head)} bytes)")


def report(r, N):
    out = os.path.join(r.tmp, "r.jsonl")
    tcsv = os.path.join(r.tmp, "r.csv")
    rep = os.path.join(r.tmp, "r.json")
    K, S = 20, N
    p, _ = run(r.cmd(N, ["--model", r.model("tiny_gpt2.h5"), "--prompt", "First", "--samples", str(S),
                         "--tokens", str(K), "--output", out, "--timings", tcsv,
                         "--report-json", rep]))
    check(p.returncode == 0, f"run succeeds (exit {p.returncode})")
    if p.returncode != 0:
        print(p.stderr)
        return
    check(p.stdout.count("--- sample ") == S, "stdout holds every sample")
    check(p.stdout.count("First") >= S, "each sample starts with its prompt")
    for key in ("split", "throughput", "first token", "decode msg", "compute_s", "wait_s", "peak_MB"):
        check(key in p.stderr, f"report mentions '{key}'")
    m = re.search(r"decode msg\s+([\d.]+) bytes per sample per hop", p.stderr)
    C = 64
    check(m is not None and 4 * C < float(m.group(1)) <= 4 * C + 64,
          f"decode message per sample per hop is 4*C plus a header of at most 64 bytes ({m and m.group(1)})")
    rows = [json.loads(l) for l in open(out, encoding="utf-8")]
    check(len(rows) == S and all(len(x["tokens"]) == K for x in rows), "JSONL: one row per sample, K tokens")
    check(all({"id", "prompt", "text", "tokens", "timings"} <= set(x) for x in rows), "JSONL fields")
    lines = open(tcsv).read().splitlines()
    check(lines[0] == "sample,tokens,time_s" and len(lines) == 1 + S * K, "CSV: header and S*K rows")
    times = [float(l.split(",")[2]) for l in lines[1:K + 1]]
    check(times == sorted(times), "CSV: times grow with tokens")
    # tiny_nanogpt's tokenizer has an end-of-text token ("\n"): samples stop there, or at K tokens.
    eot_out = os.path.join(r.tmp, "eot.jsonl")
    p2, _ = run(r.cmd(N, ["--model", r.model("tiny_nanogpt.h5"), "--prompt", "Un", "--samples", str(2 * N + 1),
                          "--tokens", "60", "--temperature", "1.5", "--output", eot_out]))
    rows = [json.loads(l) for l in open(eot_out, encoding="utf-8")] if p2.returncode == 0 else []
    ok = bool(rows) and all(
        (x["stop"] == "eot" and x["text"].endswith("\n") and "\n" not in x["text"][:-1] and len(x["tokens"]) <= 60)
        or (x["stop"] == "length" and len(x["tokens"]) == 60 and "\n" not in x["text"]) for x in rows)
    check(ok and any(x["stop"] == "eot" for x in rows), "generation stops at the end-of-text token")
    # With --crop-prompts a prompt longer than block_size (32) keeps its last 32 tokens, with a
    # note (without it, an error: bad_input).
    long_prompt = "First Citizen: ok! " * 4
    p3, _ = run(r.cmd(N, ["--model", r.model("tiny_gpt2.h5"), "--prompt", long_prompt, "--tokens", "10",
                          "--samples", "1", "--crop-prompts", "--output", eot_out]))
    rows = [json.loads(l) for l in open(eot_out, encoding="utf-8")] if p3.returncode == 0 else []
    check(p3.returncode == 0 and "note: prompt 0 has 76 tokens, more than block_size 32: keeping its last 32"
          in p3.stderr and len(rows) == 1 and len(rows[0]["prompt_tokens"]) == 32 and len(rows[0]["tokens"]) == 10,
          "a prompt longer than block_size is cropped with a note")
    j = json.load(open(rep))
    check(j["ranks"] == N and len(j["rank_stats"]) == N and j["generated"] == S * K
          and sum(x["layer_end"] - x["layer_begin"] for x in j["rank_stats"]) == j["config"]["n_layer"],
          "--report-json: ranks, generated tokens, layers")
    # mdi-llm raises Open MPI's shared-memory eager limit to 32 KiB unless the environment sets it
    # (the value is read back through MPI_T, so this checks that Open MPI took it)
    check(j["shm_eager_limit"] == 32768 and "eager limit 32768 bytes" in p.stderr,
          f"the shared-memory eager limit is 32768 by default ({j['shm_eager_limit']})")
    mine = dict(os.environ, OMPI_MCA_btl_vader_eager_limit="8192")
    p4, _ = run(r.cmd(N, ["--model", r.model("tiny_gpt2.h5"), "--tokens", "2", "--report-json", rep]), env=mine)
    got = json.load(open(rep))["shm_eager_limit"] if p4.returncode == 0 else None
    check(got == 8192 and "eager limit 8192 bytes" in p4.stderr, f"the environment's eager limit wins ({got})")
    # the split is printed once at start, by rank 0 (and again in the report)
    starts = [l for l in p.stderr.splitlines() if l.startswith("mdi-llm: ") and "rank 0" in l]
    check(len(starts) == 1, "the split is printed once at start")


def long_run(r, N):
    """10,000 tokens per sample, past block_size (32) about 300 times: every sample runs to the end,
    and no rank's peak memory grows from 1,000 to 10,000 tokens (nothing is allocated per token)."""
    peaks = {}
    for K in (1000, 10000):
        rep = os.path.join(r.tmp, f"long{K}.json")
        p, secs = run(r.cmd(N, ["--model", r.model("tiny_gpt2.h5"), "--prompt", "First", "--samples", str(N),
                                "--tokens", str(K), "--report-json", rep]), timeout=600)
        check(p.returncode == 0, f"np {N}, {N} samples x {K} tokens: exit {p.returncode} in {secs:.1f} s")
        if p.returncode != 0:
            print(p.stderr[-2000:])
            return
        j = json.load(open(rep))
        check(j["generated"] == N * K, f"{K} tokens per sample generated ({j['generated']} in all)")
        peaks[K] = [x["peak_rss_bytes"] / 2**20 for x in j["rank_stats"]]
        print(f"[ figure ] np {N}, {N} samples x {K} tokens: peak resident MiB per rank "
              + ", ".join(f"{m:.2f}" for m in peaks[K]) + f"; {j['tokens_per_s']:.0f} tokens/s")
    grew = [b - a for a, b in zip(peaks[1000], peaks[10000])]
    check(all(g <= 2.0 for g in grew), "peak memory flat from 1k to 10k tokens (growth per rank, MiB: "
          + ", ".join(f"{g:.2f}" for g in grew) + ")")


def mps_daemon_running():
    """Whether a CUDA MPS control daemon answers on its socket (the socket file outlives it)."""
    path = os.path.join(os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps", "control")
    for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
        try:
            with socket.socket(socket.AF_UNIX, kind) as s:
                s.connect(path)
                return True
        except OSError:
            pass
    return False


def same_tokens_cuda(r, N):
    tiny = ["--model", r.model("tiny_gpt2.h5"), "--prompt", "First Citizen:", "--prompt", "ok!\n"]
    probe, _ = run(r.cmd(0, tiny + ["--device", "cuda", "--tokens", "2"]))
    if probe.returncode != 0:
        print("SKIP: mdi-llm --device cuda cannot run here:", probe.stderr.strip()[-400:])
        sys.exit(77)
    # top-k and greedy: the GPU selects the candidates (Backend::top); plain temperature: the
    # whole row of logits comes back.
    sampled = ["--temperature", "0.9", "--top-k", "20", "--seed", "4242", "--tokens", "60"]
    for dtype in ("fp32", "fp16", "bf16"):
        dev = ["--device", "cuda", "--dtype", dtype]
        for S in sorted({N, 2 * N + 1}):
            flags = tiny + dev + sampled + ["--samples", str(S)]
            ref = r.tokens(0, flags)
            for n in range(2, N + 1):
                got = r.tokens(n, flags)
                check(ref is not None and got is not None and len(ref) == S and ref == got,
                      f"np {n} on the GPU, {dtype}, S={S}: token ids equal to 1 rank on the GPU")
    gather = dict(os.environ, MDI_TEST_GATHER_HEAD="1")
    for mode in (["--temperature", "0"], ["--temperature", "1.2"], ["--temperature", "0.9", "--top-k", "20"]):
        flags = tiny + ["--device", "cuda", "--seed", "4242", "--tokens", "60"] + mode + ["--samples", str(2 * N)]
        rep = os.path.join(r.tmp, "cuda_gather.json")
        ref, got = r.tokens(0, flags), r.tokens(N, flags + ["--report-json", rep], env=gather)
        head = json.load(open(rep, encoding="utf-8"))["rank_stats"][0] if got is not None else {}
        check(ref is not None and ref == got and head.get("head_micro_batches", 0) > head.get("head_passes", 0) > 0,
              f"np {N} on the GPU, {' '.join(mode)}, lm_head passes over several micro-batches: token ids "
              "equal to 1 rank on the GPU")
    # N ranks on one GPU: the report names them and points to MPS (no note where its daemon runs).
    rep = os.path.join(r.tmp, "cuda_shared.json")
    p, _ = run(r.cmd(N, tiny + ["--device", "cuda:0", "--tokens", "2", "--samples", str(N), "--report-json", rep]))
    mps = mps_daemon_running()
    if p.returncode != 0:
        print(p.stderr[-4000:])
    gpus = {s["gpu"] for s in json.load(open(rep, encoding="utf-8"))["rank_stats"]} if p.returncode == 0 else set()
    named = f"ranks {', '.join(map(str, range(N)))} share the GPU" in p.stderr
    check(p.returncode == 0 and len(gpus) == 1 and "" not in gpus and named != mps,
          f"np {N} on cuda:0: one GPU id in the report ({', '.join(sorted(gpus))}), "
          + ("no shared-GPU note under MPS" if mps else "the shared-GPU note names every rank"))
    # Mixed boards: the head on a GPU, the other ranks on CPUs (and the other way round).
    for devices in (["cuda"] + ["cpu"] * (N - 1), ["cpu"] * (N - 1) + ["cuda"]):
        got = r.tokens(N, tiny + ["--device", ",".join(devices)] + sampled + ["--samples", str(N)])
        check(got is not None and len(got) == N and all(len(t) == 60 for t in got),
              f"--device {','.join(devices)} runs ({N} samples of 60 tokens)")


def sweep(r, N):
    """tools/bench_sweep.py over 1..N ranks (samples = ranks, 2 repeats) and tools/plot_bench.py."""
    tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
    out = os.path.join(r.tmp, "sweep", "bench.csv")
    K = 12

    def bench(ranks):
        return run([sys.executable, os.path.join(tools, "bench_sweep.py"), "--bin", r.exe,
                    "--model", r.model("tiny_gpt2.h5"), "--ranks", ranks, "--prompt", "First",
                    "--tokens", str(K), "--repeat", "2", "--threads", "1", "--out", out,
                    "--mpirun", r.mpiexec[0], "--mpirun-flags", shlex.join(r.mpiexec[1:])])[0]

    p = bench(",".join(str(n) for n in range(1, N + 1)))
    check(p.returncode == 0, f"bench_sweep.py succeeds (exit {p.returncode})")
    if p.returncode != 0:
        print(p.stdout[-2000:], p.stderr[-2000:], sep="\n")
        return
    rows = list(csv.DictReader(open(out, newline="")))
    check([int(x["ranks"]) for x in rows] == list(range(1, N + 1))
          and all(int(x["samples"]) == int(x["ranks"]) for x in rows), "one row per rank count, samples = ranks")
    check(all(x["status"] == "ok" and int(x["generated"]) == K * int(x["samples"]) for x in rows),
          "every run ok and generated samples x tokens")
    check(all(float(x["tokens_per_s"]) > 0 and len(x["tokens_per_s_runs"].split(";")) == 2 for x in rows),
          "tokens/s of both repeats, the best in the row")
    check(all(len(x["compute_s"].split(";")) == int(x["ranks"]) and len(x["wait_s"].split(";")) == int(x["ranks"])
              for x in rows), "per-rank compute and wait seconds")
    check(float(rows[0]["pipeline_efficiency"]) == 1.0 and all(float(x["pipeline_efficiency"]) > 0 for x in rows),
          "pipeline efficiency against the sweep's own 1-rank run")
    check(all(x["eager_limit"] == "32768" for x in rows[1:]), "the report's eager limit reaches the CSV")
    C = 64
    check(all(4 * C < float(x["bytes_per_token_per_hop"]) <= 4 * C + 64 for x in rows[1:]),
          "bytes per token per hop: one row of activations and the header")
    reps = [json.load(open(os.path.join(os.path.dirname(out), x["report_json"]))) for x in rows]
    check(all(abs(j["tokens_per_s"] / float(x["tokens_per_s"]) - 1) < 1e-3 and j["ranks"] == int(x["ranks"])
              for j, x in zip(reps, rows)), "each row names its run's report, and holds its figures")
    # a second sweep appends to the same CSV without a second header
    p2 = bench("1")
    lines = open(out).read().splitlines()
    check(p2.returncode == 0 and len(lines) == N + 2 and lines.count(lines[0]) == 1, "a second sweep appends rows")
    plot_py = next((py for py in (sys.executable, "/usr/bin/python3")
                    if os.path.exists(py) and subprocess.run([py, "-c", "import matplotlib"],
                                                             capture_output=True).returncode == 0), None)
    if plot_py is None:
        print("SKIP plot_bench.py: no Python with matplotlib here (Debian: python3-matplotlib)")
        return
    pdir = os.path.join(r.tmp, "plots")
    p3, _ = run([plot_py, os.path.join(tools, "plot_bench.py"), out, "--outdir", pdir, "--combined"])
    check(p3.returncode == 0, f"plot_bench.py succeeds (exit {p3.returncode})" + ("" if p3.returncode == 0 else p3.stderr[-1500:]))
    pngs = sorted(os.listdir(pdir)) if os.path.isdir(pdir) else []
    ok = len(pngs) >= 4 and all(open(os.path.join(pdir, f), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
                                and os.path.getsize(os.path.join(pdir, f)) > 5000 for f in pngs)
    check(ok, f"plot_bench.py writes the PNGs ({', '.join(pngs)})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["same-tokens", "bad-input", "report", "kill-rank", "cuda", "long", "sweep"])
    ap.add_argument("--ranks", type=int, required=True)
    ap.add_argument("--exe", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--mpiexec", required=True, help="one string: mpiexec, its flags, then the -np flag")
    args = ap.parse_args()
    r = Runner(args)
    {"same-tokens": same_tokens, "bad-input": bad_input, "report": report,
     "kill-rank": kill_rank, "cuda": same_tokens_cuda, "long": long_run, "sweep": sweep}[args.what](r, args.ranks)
    print(f"{args.what}: {len(FAILS)} failed")
    if FAILS:
        print(f"{args.what}: the runs' files are kept in {r.tmp}")
    else:
        shutil.rmtree(r.tmp, ignore_errors=True)
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
