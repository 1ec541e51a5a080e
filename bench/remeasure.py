"""Re-measure a finished study's pick against a reference, interleaved.

    python bench/remeasure.py --storage sqlite:///study.db --study mnist-cuda [--json OUT]
    python bench/remeasure.py --storage sqlite:///autotune.db --study mnist-cpu --against grid

The reference is either the trial of the backend's reference recipe (`--against recipe`,
the default: `Backend.reference_recipe`, queued first by the tuner; used by
bench/gpu_check.sh) or the best config of the exhaustive uniform-precision grid stored for
this kind of CPU by bench/search_quality.py (`--against grid`: how close the study's pick
is to this machine's optimum). Both configs run `--repeats` times each, alternating (ABBA
order, so a drift of the machine hits both alike), each in a fresh trial process with the
study's own measurement protocol and accuracy check; the ratio of the medians is the
pick's speed relative to the reference, measured in one run on one device.
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
from autotune.jobs import fp32_reference, trial_job
from autotune.launch.runner import RunnerSettings, run_job
from autotune.records import study_record
from autotune.storage import load_study
from autotune.study_options import StudyOptions
from autotune.tables import num
from autotune.wire import TrialConfig


def grid_best_config(model: str) -> TrialConfig | None:
    """The grid best stored for this kind of CPU, or None where no grid was measured."""
    from search_quality import RESULTS, cpu_kind, grid_best  # bench/, next to this script

    path = RESULTS / cpu_kind()[0] / f"{model}.json"
    if not path.exists():
        return None
    return TrialConfig.from_dict(json.loads(grid_best(json.loads(path.read_text()))[0]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--against", choices=("recipe", "grid"), default="recipe")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per trial process")
    p.add_argument("--cache-dir", type=Path, help="compile cache (the study's, to reuse it)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args()

    study = load_study(args.storage, args.study)
    opts = StudyOptions.from_study(study_record(study))
    rows = trial_rows(study)
    pick = best_feasible(rows)
    if pick is None:
        print(f"remeasure: study {args.study!r} has no feasible trial", file=sys.stderr)
        return 1
    configs = {"pick": TrialConfig.from_dict(pick.config)}
    if args.against == "grid":
        reference = None
        grid = grid_best_config(configs["pick"].model)
        if grid is None:
            print(
                "remeasure: no grid stored for this CPU (bench/search_quality.py)", file=sys.stderr
            )
            return 1
        configs["reference"] = grid
    else:
        reference = reference_recipe_row(study, rows)
        if reference is None:
            print(f"remeasure: study {args.study!r} has no measured recipe", file=sys.stderr)
            return 1
        configs["reference"] = TrialConfig.from_dict(reference.config)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        settings = RunnerSettings(timeout_s=args.timeout, cache_dir=cache)
        ref = fp32_reference(configs["pick"].model, opts.eval_limit, settings, cache)
        runs: dict[str, list[dict]] = {"pick": [], "reference": []}
        for i in range(args.repeats):
            order = ("pick", "reference") if i % 2 == 0 else ("reference", "pick")
            for name in order:
                job = trial_job(opts, configs[name], ref)
                started = time.perf_counter()
                result = run_job(job, settings)
                runs[name].append(
                    {
                        "status": str(result.status),
                        "message": result.message,
                        "throughput_samples_per_s": result.metrics.get("throughput_samples_per_s"),
                        "throughput_iqr": result.metrics.get("throughput_iqr"),
                        "metric_drop": result.metrics.get("metric_drop"),
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
            "what": "the grid best" if reference is None else "the backend's reference recipe",
            "trial": None if reference is None else reference.number,
            "config": configs["reference"].to_dict(),
            "in_study": None if reference is None else reference.throughput,
        },
        "runs": runs,
        "median_samples_per_s": medians,
        "speedup_pick_vs_reference": speedup,
    }
    print(
        f"medians (same run, interleaved): pick {num(medians['pick'])}, reference "
        f"{num(medians['reference'])} samples/s; speedup "
        + (f"{speedup:.2f}x" if speedup else "n/a")
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def _fmt(run: dict) -> str:
    if run["status"] != "ok":
        return f"{run['status']}: {run['message']}"
    return f"{num(run['throughput_samples_per_s'])} samples/s ({run['wall_s']:.0f} s)"


if __name__ == "__main__":
    sys.exit(main())
