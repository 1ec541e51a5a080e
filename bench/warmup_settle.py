"""Benchmark: does a warm-up that ends once iteration times settle see what a full one sees?

    python bench/warmup_settle.py [--model mnist] [--seconds 1.5] [--json OUT]

For each config (batch x level x dtype, inductor, one stream), a fresh interpreter builds the
model as a trial does (`backend.prepare`, the study's input), runs the first (compiling)
iteration, then times every iteration for `--seconds`. From those times, without re-running:
where the trial's warm-up rule (`autotune.child.trial.warm_enough`) ends the warm-up, and
where the fixed warm-up of `warmup_seconds` (the protocol before the rule) ends it; then the
median throughput of the 0.5 s of iterations that follow each end (what the timing would
see), and its ratio. The rule is safe where the ratio stays within noise of 1.00 (a warm-up
ended too early would time unsettled, slower iterations: a ratio under 1). Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autotune import defaults
from autotune.child.trial import warm_enough
from autotune.host import cpu_model
from autotune.wire import TrialConfig, TrialJob

WINDOW_S = 0.5  # the timing after a warm-up, as the protocol's measure_seconds half


def child(config_json: str, seconds: float) -> None:
    import torch

    from autotune import pytree
    from autotune.backends import get_backend
    from autotune.child.batches import host_batch, to_device, to_host
    from studies import get_study

    config = TrialConfig.from_dict(json.loads(config_json))
    study, backend = get_study(config.model), get_backend("cpu")
    with torch.no_grad():
        backend.initialize(config)
        run = backend.prepare(study.build_model(), config)
        x = host_batch(backend, study.example_input(config.batch_size), config)

        def step() -> None:
            to_host(backend, pytree.call(run, to_device(backend, x, config)))

        times = []
        for _ in range(1 + int(1e9)):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            if sum(times[1:]) >= seconds and len(times) > 8:
                break
    print(json.dumps(times))


def after(times: list[float], end: int, batch: int) -> float:
    """Median per-iteration throughput over the WINDOW_S of iterations from index `end`."""
    window, spent = [], 0.0
    for t in times[min(end, len(times) - 1) :]:
        window.append(batch / t)
        spent += t
        if spent >= WINDOW_S:
            break
    return statistics.median(window)


def ends(times: list[float]) -> tuple[int, int]:
    """Where the rule's warm-up and the fixed one end (iteration counts, compile included)."""
    job = TrialJob(TrialConfig("mnist", "cpu", 1))
    rule = fixed = None
    elapsed = 0.0
    for n in range(1, len(times) + 1):
        if n > 1:
            elapsed += times[n - 1]
        if rule is None and warm_enough(job, times[:n], elapsed):
            rule = n
        if fixed is None and n >= job.warmup_iters and elapsed >= job.warmup_seconds:
            fixed = n
    return rule or len(times), fixed or len(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.seconds)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    rows = []
    for level in (0, 1, 2):
        for dtype in ("fp32", "bf16"):
            for batch in (8, 64, 512, 4096):
                config = TrialConfig(
                    args.model, "cpu", batch, optimization_level=level, activation_dtype=dtype
                )
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        json.dumps(config.to_dict()),
                        "--seconds",
                        str(args.seconds),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                times = json.loads(out.stdout.strip().splitlines()[-1])
                rule, fixed = ends(times)
                a, b = after(times, rule, batch), after(times, fixed, batch)
                rows.append(
                    {
                        "config": f"bs{batch} O{level} {dtype}",
                        "rule_end_s": sum(times[1:rule]),
                        "fixed_end_s": sum(times[1:fixed]),
                        "rule_throughput": a,
                        "fixed_throughput": b,
                        "ratio": a / b,
                    }
                )
                r = rows[-1]
                print(
                    f"| {r['config']} | {r['rule_end_s']:.2f} | {r['fixed_end_s']:.2f} | "
                    f"{a:,.0f} | {b:,.0f} | {r['ratio']:.3f} |",
                    flush=True,
                )
    ratios = [r["ratio"] for r in rows]
    saved = statistics.mean(r["fixed_end_s"] - r["rule_end_s"] for r in rows)
    print(
        f"\n{cpu_model()}: rule/fixed median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); warm-up shorter by {saved:.2f} s "
        f"on average (measure_seconds {defaults.MEASURE_SECONDS:g})"
    )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
