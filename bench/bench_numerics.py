"""Time autotune.numerics.round_bfp on fc1 of the MNIST CNN: a [128, 9216] fp32 weight.

Why: weights are rounded in trial processes before every bfp trial, so this must stay
far below the trial's own cost (target: well under 100 ms on a 2-core CPU).

    PYTHONPATH=. python bench/bench_numerics.py [--repeats 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from autotune.numerics import BFP_FORMATS, BFP_RULES, round_bfp

SHAPE = (128, 9216)


def bench(repeats: int, warmup: int) -> list[dict[str, object]]:
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    rows = []
    for fmt in BFP_FORMATS:
        for rule in BFP_RULES:
            for _ in range(warmup):
                round_bfp(x, fmt, rule)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                round_bfp(x, fmt, rule)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            rows.append(
                {
                    "fmt": fmt,
                    "rule": rule,
                    "median_ms": round(med * 1e3, 3),
                    "min_ms": round(min(times) * 1e3, 3),
                    "mvalues_per_s": round(x.numel() / med / 1e6, 1),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed runs (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = bench(args.repeats, args.warmup)
    meta = {
        "shape": list(SHAPE),
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work skews the figures
    }
    if args.json:
        print(json.dumps({**meta, "results": rows}))
        return
    print(f"round_bfp on {SHAPE} fp32, median of {args.repeats}, {meta['threads']} threads")
    print(f"{'fmt':<8} {'rule':<7} {'ms':>8} {'min ms':>8} {'Mval/s':>8}")
    for r in rows:
        print(
            f"{r['fmt']:<8} {r['rule']:<7} {r['median_ms']:>8.2f} "
            f"{r['min_ms']:>8.2f} {r['mvalues_per_s']:>8.1f}"
        )


if __name__ == "__main__":
    main()
