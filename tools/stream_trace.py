#!/usr/bin/env python3
"""Reads the traces of tools/bench_stream.cu (WS_DIAG=DIR) and says where the weight stream
stalls: per pass boundary, how far apart the blocks arrive (skew) and how long the grid barrier
then takes (latency); how full each block's ring is when its consumers are released; and the
bytes landed per microsecond over the whole grid, inside the barrier windows and outside them.

  tools/stream_trace.py DIR/trace_48_skip1_cap0.bin [more.bin ...] [--sms 132] [--layers 48] [--full]

The file name gives the slot size (trace_<KB>_skip<k>.bin); the ring depth is 4 slots of 48 KB,
6 of 32 KB or 12 of 16 KB, as bench_stream's WS_DIAG runs them."""
import argparse
import re

import numpy as np

MAX_PASSES, MAX_CHUNKS = 256, 2048
ARRIVE, RELEASE, LAND = 0, MAX_PASSES, 2 * MAX_PASSES
STRIDE = LAND + MAX_CHUNKS
C = 1600
SHAPES = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]  # (OC, IC) of a layer's passes
SHAPES_FULL = [(3 * C, C), (0, 3 * C), (C, C), (4 * C, C), (C, 4 * C)]  # WS_FULL: the attention (no rows) too
RING = {48: 4, 32: 6, 16: 12}


def shares(layers, sms, slot, shapes):
    """Per block: the bytes of each chunk, in stream order, and each chunk's pass."""
    out = []
    for b in range(sms):
        nbytes, passes = [], []
        for s in range(len(shapes) * layers):
            oc, ic = shapes[s % len(shapes)]
            r0, r1 = oc * b // sms, oc * (b + 1) // sms
            rc = slot // (ic * 2)
            for c in range((r1 - r0 + rc - 1) // rc):
                rows = min(rc, r1 - r0 - c * rc)
                nbytes.append(rows * ic * 2)
                passes.append(s)
        out.append((np.array(nbytes[:MAX_CHUNKS]), np.array(passes[:MAX_CHUNKS])))
    return out


def report(path, sms, layers, full):
    m = re.search(r"trace_(\d+)_skip(\d)", path)  # trace_<KB>_skip<k>[_cap<n>].bin
    slot_kb, skip = int(m.group(1)), int(m.group(2))
    ring = RING[slot_kb]
    t = np.fromfile(path, dtype=np.uint64).reshape(sms, STRIDE).astype(np.int64)
    shapes = SHAPES_FULL if full else SHAPES
    n_passes = len(shapes) * layers
    sh = shares(layers, sms, slot_kb * 1024, shapes)
    t0 = min(int(t[b, LAND]) for b in range(sms))
    land = [t[b, LAND:LAND + len(sh[b][0])] - t0 for b in range(sms)]
    arrive = t[:, ARRIVE + 1:ARRIVE + n_passes] - t0  # (sms, n_passes - 1): boundary before pass s
    release = t[:, RELEASE + 1:RELEASE + n_passes] - t0
    end = max(int(x.max()) for x in land)
    total_bytes = sum(int(x[0].sum()) for x in sh)
    print(f"{path}: slots {ring} x {slot_kb} KB, skip {skip}; {total_bytes / 1e9:.3f} GB landed in "
          f"{end / 1e3:.1f} us from the first chunk ({total_bytes / end:.0f} GB/s)")

    skew = arrive.max(0) - arrive.min(0)
    lat = release.min(0) - arrive.max(0)
    rspread = release.max(0) - release.min(0)
    wait = (release - arrive).mean(0)
    q = lambda a: f"median {np.median(a) / 1e3:.2f}, mean {a.mean() / 1e3:.2f}, p90 {np.percentile(a, 90) / 1e3:.2f} us"
    print(f"  arrival skew over the blocks: {q(skew)}")
    print(f"  barrier latency (last arrival to first release): {q(lat)}")
    print(f"  release spread: {q(rspread)}; a block's wait: {q(wait)}")
    print(f"  sum over the boundaries: skew {skew.sum() / 1e3:.1f} us, latency {lat.sum() / 1e3:.1f} us, "
          f"mean wait {wait.sum() / 1e3:.1f} us")

    # Ring at release: chunks of later passes landed by then (the consumers hold them all, so the
    # producer has no slot to copy into when this reaches the ring's depth).
    full_at_release = []
    for b in range(sms):
        nb, ps = sh[b]
        for s in range(1, n_passes):
            rel = release[b, s - 1]
            k = int(((ps >= s) & (land[b] <= rel) & (land[b] > 0)).sum())
            full_at_release.append(min(k, ring))
    f = np.bincount(np.array(full_at_release), minlength=ring + 1) / len(full_at_release)
    print("  slots landed and waiting when a block is released: " +
          ", ".join(f"{k}: {100 * f[k]:.0f}%" for k in range(ring + 1)))

    # Bytes landed per microsecond, over the grid.
    bins = np.zeros(end // 1000 + 1)
    for b in range(sms):
        np.add.at(bins, land[b] // 1000, sh[b][0])
    gbs = bins / 1e3  # bytes per us -> GB/s
    inside = np.zeros(len(bins), bool)
    for s in range(n_passes - 1):
        a, r = int(arrive[:, s].max()) // 1000, int(release[:, s].min()) // 1000
        inside[a:r + 1] = True
    print(f"  landed GB/s per 1 us bin: median {np.median(gbs):.0f}; inside barrier windows "
          f"{gbs[inside].mean() if inside.any() else float('nan'):.0f} ({inside.mean() * 100:.0f}% of bins), "
          f"outside {gbs[~inside].mean():.0f}; bins under half the median: {(gbs < np.median(gbs) / 2).mean() * 100:.0f}%")
    # One layer in the middle, boundary by boundary.
    l = layers // 2
    for s in range(len(shapes) * l, len(shapes) * (l + 1)):
        print(f"  pass {s}: skew {skew[s - 1] / 1e3:.2f} us, latency {lat[s - 1] / 1e3:.2f} us, "
              f"first release at {release[:, s - 1].min() / 1e3:.1f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--full", action="store_true", help="traces of WS_FULL runs (five passes a layer)")
    a = ap.parse_args()
    for p in a.traces:
        report(p, a.sms, a.layers, a.full)


if __name__ == "__main__":
    main()
