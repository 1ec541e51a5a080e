"""Per-trial process wall time, spawned trial process vs fork server, for the same eager job.

    python bench/forkserver_bench.py [--model mnist] [--repeats 10] [--batch-size 64]

Interleaved (spawn, fork, spawn, fork, ...) in one run, after one untimed run of each
(reference, server start, OS caches), so a loaded or drifting machine affects both alike;
the ratio is the figure to quote. `process_s` is the runner's wall time from launch to
exit, `trial_s` the trial process's own time inside `trial_process.main`, their difference the
interpreter start and imports a spawn pays before `main`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autotune.host import cpu_model, usable_cores
from autotune.jobs import fp32_reference, trial_job
from autotune.launch.runner import RunnerSettings, run_job
from autotune.study_options import StudyOptions
from autotune.wire import TrialConfig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--measure-seconds", type=float, default=0.2)
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--json", type=Path, help="also write the raw timings here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="forkserver-bench-") as tmp:
        cache = Path(tmp) / "cache"
        settings = RunnerSettings(cache_dir=cache, timeout_s=600)
        spawn = replace(settings, fork_trials=False)
        ref = fp32_reference(args.model, args.eval_limit, spawn, cache)
        opts = StudyOptions(
            args.model, measure_seconds=args.measure_seconds, eval_limit=args.eval_limit
        )
        config = TrialConfig(args.model, "cpu", args.batch_size)
        job = trial_job(opts, config, replace(ref, metric_value=None))
        modes = {"spawn": replace(settings, fork_trials=False), "fork": settings}
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for i in range(args.repeats + 1):
            for mode, mode_settings in modes.items():
                result = run_job(job, mode_settings)
                if not result.ok:
                    print(f"{mode}: {result.status} {result.message}", file=sys.stderr)
                    return 1
                if i:  # the first of each is untimed: server start, caches
                    runs[mode].append(dict(result.timings))

    def med(mode: str, key: str) -> float:
        return statistics.median(t[key] for t in runs[mode])

    print(
        f"{args.model} bs{args.batch_size} eager fp32, {args.repeats} interleaved runs each, "
        f"{cpu_model()}, {usable_cores()} usable cores"
    )
    print(f"{'':6} {'process_s':>10} {'trial_s':>9} {'outside':>8}")
    for mode in modes:
        p, w = med(mode, "process_s"), med(mode, "trial_s")
        print(f"{mode:6} {p:10.2f} {w:9.2f} {p - w:8.2f}")
    ratio = med("fork", "process_s") / med("spawn", "process_s")
    pairs = zip(runs["spawn"], runs["fork"], strict=True)
    per_run = [f["process_s"] / s["process_s"] for s, f in pairs]
    print(
        f"fork/spawn process_s: {ratio:.2f} (ratio of medians); per pair "
        f"{min(per_run):.2f}..{max(per_run):.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
