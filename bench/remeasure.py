"""Re-measure a finished study's pick and its reference (the reference recipe), interleaved.

    python bench/remeasure.py --storage sqlite:///study.db --study mnist-cuda [--json OUT]

The study's reference is the trial of its backend's reference recipe (`Backend.reference_recipe`,
queued first by the tuner). Both configs run `--repeats` times each, alternating (ABBA order,
so a drift of the machine hits both alike), each in a fresh trial process with the study's own
measurement protocol and accuracy check; the ratio of the medians is the speedup over the
reference recipe measured in one run on one device. Used by bench/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autotune.analysis import best_feasible, reference_recipe_row, trial_rows
from autotune.config import TrialConfig, TrialJob
from autotune.records import study_record
from autotune.reference import fp32_reference
from autotune.runner import RunnerSettings, run_job
from autotune.storage import load_study


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per trial process")
    p.add_argument("--cache-dir", type=Path, help="compile cache (the study's, to reuse it)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args()

    study = load_study(args.storage, args.study)
    options = study_record(study).options
    rows = trial_rows(study)
    pick, reference = best_feasible(rows), reference_recipe_row(study, rows)
    if pick is None or reference is None:
        what = "feasible trial" if pick is None else "measured seed-recipe trial"
        print(f"remeasure: study {args.study!r} has no {what}", file=sys.stderr)
        return 1
    configs = {
        "pick": TrialConfig.from_dict(pick.config),
        "reference": TrialConfig.from_dict(reference.config),
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        settings = RunnerSettings(timeout_s=args.timeout, cache_dir=cache)
        eval_limit = options.get("eval_limit")
        ref = fp32_reference(configs["pick"].model, eval_limit, settings, cache)
        runs: dict[str, list[dict]] = {"pick": [], "reference": []}
        for i in range(args.repeats):
            order = ("pick", "reference") if i % 2 == 0 else ("reference", "pick")
            for name in order:
                job = TrialJob(
                    configs[name],
                    measure_seconds=options.get("measure_seconds", 1.0),
                    warmup_iters=options.get("warmup_iters", 3),
                    warmup_seconds=options.get("measure_seconds", 1.0) / 2,
                    reference_path=str(ref.path),
                    reference_accuracy=ref.accuracy,
                    eval_limit=eval_limit,
                )
                started = time.perf_counter()
                result = run_job(job, settings)
                runs[name].append(
                    {
                        "status": str(result.status),
                        "message": result.message,
                        "throughput_samples_per_s": result.metrics.get("throughput_samples_per_s"),
                        "throughput_iqr": result.metrics.get("throughput_iqr"),
                        "accuracy_drop": result.metrics.get("accuracy_drop"),
                        "device": result.environment.get("device"),
                        "wall_s": time.perf_counter() - started,
                    }
                )
                print(f"{name:9s} round {i}: {_fmt(runs[name][-1])}", flush=True)

    medians = {
        name: statistics.median(ok) if ok else None
        for name, ok in (
            (n, [r["throughput_samples_per_s"] for r in rs if r["status"] == "ok"])
            for n, rs in runs.items()
        )
    }
    speedup = (
        medians["pick"] / medians["reference"] if medians["pick"] and medians["reference"] else None
    )
    figures = {
        "study": args.study,
        "device": next((r["device"] for rs in runs.values() for r in rs if r["device"]), None),
        "pick": {"trial": pick.number, "config": pick.config, "in_study": pick.throughput},
        "reference": {
            "what": "the seed's recipe on this backend",
            "trial": reference.number,
            "config": reference.config,
            "in_study": reference.throughput,
        },
        "runs": runs,
        "median_samples_per_s": medians,
        "speedup_pick_vs_reference": speedup,
    }
    print(
        f"medians (same run, interleaved): pick {_num(medians['pick'])}, reference "
        f"{_num(medians['reference'])} samples/s; speedup "
        + (f"{speedup:.2f}x" if speedup else "n/a")
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt(run: dict) -> str:
    if run["status"] != "ok":
        return f"{run['status']}: {run['message']}"
    return f"{_num(run['throughput_samples_per_s'])} samples/s ({run['wall_s']:.0f} s)"


if __name__ == "__main__":
    sys.exit(main())
