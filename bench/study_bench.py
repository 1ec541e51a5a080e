"""Benchmark: the 50-trial MNIST study on this machine, and the reference recipe next to it.

    python bench/study_bench.py [--trials 50] [--seed 0] [--backend cpu] [--json OUT]

Reports the study's wall time; where that time goes (measurement vs compile, warmup,
evaluation, process spawn and imports, tuner bookkeeping); and the best feasible config's
throughput next to the reference recipe (batch 64, bf16, highest optimization level, trace on
where the backend has it), both re-measured in this run, interleaved, so the ratio is fair
on a noisy machine. Uses a fresh compile cache unless --warm-cache is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from autotune.analysis import best_feasible, trial_rows
from autotune.backends import get_backend
from autotune.jobs import trial_job
from autotune.launch.runner import RunnerSettings, run_job
from autotune.records import TrialRecord
from autotune.study_options import StudyOptions, default_cache_dir
from autotune.tuner import Tuner
from autotune.wire import TrialConfig
from studies import get_study


def reference_recipe(model: str, backend_name: str) -> TrialConfig:
    backend = get_backend(backend_name)
    study = get_study(model)
    lowered = "bf16" if "bf16" in backend.weight_dtypes else backend.weight_dtypes[0]
    weights = [(w.name, lowered) for w in study.weights if w.kind in backend.weight_kinds]
    extras = [(k.name, k.choices[0]) for k in backend.knobs]  # knobs off: the recipe sets none
    return TrialConfig(
        model, backend_name, 64, 2, backend.has_trace, "bf16", tuple(weights), tuple(extras)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="autotune", choices=("autotune", "tpe", "random"))
    p.add_argument("--repeats", type=int, default=3, help="re-measurements of best and recipe")
    p.add_argument("--warm-cache", action="store_true", help="reuse ~/.cache/autotune")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument("--keep", type=Path, help="keep the study's SQLite file in this folder")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db_dir = args.keep or Path(tmp)
        db_dir.mkdir(parents=True, exist_ok=True)
        cache = default_cache_dir() if args.warm_cache else Path(tmp) / "cache"
        opts = StudyOptions(
            model=args.model,
            backend=args.backend,
            trials=args.trials,
            storage=f"sqlite:///{db_dir}/bench.db",
            seed=args.seed,
            sampler=args.sampler,
            cache_dir=cache,
            progress=False,
        )
        start, started_at = time.perf_counter(), datetime.now()  # Optuna stamps local time
        tuner = Tuner(opts)
        tuner.run()
        wall = time.perf_counter() - start
        ended_at = datetime.now()

        trials = tuner.study.get_trials()
        sums: dict[str, float] = {}
        for t in trials:
            for k, v in (TrialRecord.of(t).timings or {}).items():
                sums[k] = sums.get(k, 0.0) + v
        spawned = sum(1 for t in trials if TrialRecord.of(t).timings is not None)
        compiled = sum(
            1
            for t in trials
            if TrialRecord.of(t).timings is not None
            and (TrialRecord.of(t).config or {}).get("optimization_level", 0) > 0
        )
        # Outside the trials: before the first (the fp32 reference, whose trial process also starts
        # the fork server) and after the last (confirmation re-measurements).
        before = (min(t.datetime_start for t in trials) - started_at).total_seconds()
        after = (ended_at - max(t.datetime_complete for t in trials)).total_seconds()
        rows = trial_rows(tuner.study)
        best = best_feasible(rows)
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1

        # Re-measure best and recipe, interleaved, with the study's own protocol.
        settings = RunnerSettings(cache_dir=cache, timeout_s=opts.timeout_per_trial)
        ref = tuner.reference()
        best_cfg = TrialConfig.from_dict(best.config)
        recipe_cfg = reference_recipe(args.model, args.backend)
        again: dict[str, list[float]] = {"best": [], "recipe": []}
        for _ in range(args.repeats):
            for name, cfg in (("best", best_cfg), ("recipe", recipe_cfg)):
                job = trial_job(opts, cfg, ref)
                again[name].append(run_job(job, settings).metrics["throughput_samples_per_s"])

    other = sums.get("process_s", 0) - sums.get("trial_s", 0)
    trial_rest = sums.get("trial_s", 0) - sum(
        sums.get(k, 0) for k in ("compile_s", "warmup_s", "measure_s", "eval_s")
    )
    breakdown = {
        "timed measurement": sums.get("measure_s", 0),
        "compile (incl. model build)": sums.get("compile_s", 0),
        "warmup": sums.get("warmup_s", 0),
        "accuracy evaluation": sums.get("eval_s", 0),
        "process start (fork server or spawn) + imports": other + trial_rest,
        "before the first trial (fp32 reference, fork server start)": before,
        "after the last trial (confirmation re-measurements)": after,
        "tuner between trials (sampler, storage)": wall - before - after - sums.get("process_s", 0),
    }
    best_med, recipe_med = statistics.median(again["best"]), statistics.median(again["recipe"])
    figures = {
        "trials": len(trials),
        "trial_processes": spawned,
        "trials_compiled": compiled,
        "statuses": statuses,
        "wall_s": wall,
        "breakdown_s": breakdown,
        "share_outside_measurement": 1 - breakdown["timed measurement"] / wall,
        "best_trial": best.number,
        "best_config": best.config,
        "best_throughput_in_study": best.throughput,
        "best_remeasured": again["best"],
        "recipe_remeasured": again["recipe"],
        "speedup_vs_recipe": best_med / recipe_med,
        "recipe_config": recipe_cfg.to_dict(),
    }
    print(
        f"study: {len(trials)} trials ({spawned} trial processes, {compiled} of them compiled; "
        f"the rest copied the outcome of an earlier trial) in {wall:.0f} s; "
        f"statuses {statuses}"
    )
    for k, v in breakdown.items():
        print(f"  {k:58s} {v:7.1f} s  {100 * v / wall:5.1f} %")
    print(f"share outside timed measurement: {100 * figures['share_outside_measurement']:.0f} %")
    print(f"best feasible: trial {best.number} {best.config}")
    print(
        f"  in study {best.throughput:,.0f}/s; re-measured "
        + ", ".join(f"{v:,.0f}" for v in again["best"])
    )
    print("reference recipe re-measured " + ", ".join(f"{v:,.0f}" for v in again["recipe"]))
    print(
        f"speedup of best over the recipe (medians, same run): {figures['speedup_vs_recipe']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
