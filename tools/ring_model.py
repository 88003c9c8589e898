#!/usr/bin/env python3
"""A paper model of the ring (docs/h200/README.md, "Why N = 4 stays near 0.82"): rank 0 runs the
head, N - 1 workers run their blocks, M = N micro-batches of one row each. A head pass over r rows
costs HEAD + (r - 1) * EXTRA ms, a worker's pass WORKER ms a row; rank 0 takes the micro-batches
that came back while it was busy (policy `all`, as run_starter does, up to 4) or waits until it
has two (`pair`). Prints the pipeline efficiency against a 1-rank run of BASE ms a token.
    tools/ring_model.py --ranks 4 --head 13.3 --worker 10.1 --base 43.6
"""
import argparse
import heapq


def simulate(ranks, head, extra, worker, policy, steps=400):
    free_at = [0.0] * ranks              # when each worker is free
    back = [(0.0, mb) for mb in range(ranks)]  # (time, micro-batch) back at rank 0
    heapq.heapify(back)
    now, rows, passes = 0.0, 0, 0
    while rows < steps * ranks:
        now = max(now, back[0][0])
        batch = []
        while back and back[0][0] <= now and len(batch) < 4:
            batch.append(heapq.heappop(back))
        if policy == "pair" and len(batch) < 2 and back:
            batch.append(heapq.heappop(back))
            now = max(now, batch[-1][0])
        now += head + (len(batch) - 1) * extra
        rows, passes = rows + len(batch), passes + 1
        for _, mb in batch:
            t = now
            for s in range(1, ranks):
                free_at[s] = max(t, free_at[s]) + worker
                t = free_at[s]
            heapq.heappush(back, (t, mb))
    return rows / now, rows / passes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--head", type=float, required=True, help="ms of a 1-row head pass")
    ap.add_argument("--extra", type=float, default=1.0, help="ms per further row of a head pass")
    ap.add_argument("--worker", type=float, required=True, help="ms of a worker's pass over one row")
    ap.add_argument("--base", type=float, required=True, help="ms a token on 1 rank, 1 sample")
    args = ap.parse_args()
    for policy in ("all", "pair"):
        rate, per_pass = simulate(args.ranks, args.head, args.extra, args.worker, policy)
        print(f"{policy:4s}: efficiency {rate * args.base / args.ranks:.3f}, rows per head pass {per_pass:.2f}")


if __name__ == "__main__":
    main()
