"""Studies of the shipped user-file examples: what the README's own-model command does.

    python bench/own_models.py [--trials 20] [--repeats 3] [--json OUT]

For each example (`studies/examples/token_classifier.py:STUDY`, int64 token ids + mask;
`studies/examples/regressor.py:STUDY`, float + int64 inputs, a dict output, RMSE), run
`autotune study --model FILE:STUDY --trials N` from a clean storage and cache, then
re-measure the pick against the plain fp32 eager loop at the same batch size (what a user
runs without the tuner), alternating (ABBA), each in a fresh trial process with the
study's protocol and metric. Prints the study's wall time, the pick, its metric drop and
the ratio of the medians. Run it on a quiet machine (nothing else running).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from autotune.analysis import best_feasible, trial_rows
from autotune.host import cpu_model
from autotune.jobs import fp32_reference, trial_job
from autotune.launch.runner import RunnerSettings, run_job
from autotune.records import study_record
from autotune.storage import load_study
from autotune.study_options import StudyOptions
from autotune.wire import TrialConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("token_classifier.py", "regressor.py")


def _flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)


def one(example: str, trials: int, repeats: int) -> dict:
    model = f"{ROOT / 'studies' / 'examples' / example}:STUDY"
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/bench.db"
        env = {"XDG_CACHE_HOME": f"{tmp}/cache"}
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "autotune",
                "study",
                "--model",
                model,
                "--trials",
                str(trials),
                "--storage",
                storage,
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            cwd=tmp,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{example}: study failed: {proc.stderr.strip().splitlines()[-1]}")
        study = load_study(storage, f"{example}:STUDY-cpu")
        record = study_record(study)
        pick = best_feasible(trial_rows(study))
        assert pick is not None, f"{example}: no feasible trial"
        opts = StudyOptions.from_study(record, cache_dir=Path(tmp) / "cache")
        settings = RunnerSettings(cache_dir=opts.cache_dir, timeout_s=300)
        ref = fp32_reference(model, opts.eval_limit, settings, opts.cache_dir)
        picked = TrialConfig.from_dict(pick.config)
        plain = replace(
            picked, optimization_level=0, activation_dtype="fp32", weight_dtypes=(), knobs=()
        )
        runs: dict[str, list[float]] = {"pick": [], "fp32 eager": []}
        for i in range(repeats):
            order = [("pick", picked), ("fp32 eager", plain)]
            for name, config in order if i % 2 == 0 else order[::-1]:
                result = run_job(trial_job(opts, config, ref), settings)
                runs[name].append(result.metrics.get("throughput_samples_per_s") or 0.0)
        med = {k: statistics.median(v) for k, v in runs.items()}
        return {
            "example": example,
            "trials": trials,
            "study_wall_s": round(wall, 1),
            "metric": record.metric,
            "pick": pick.config,
            "pick_metric_drop": pick.metric_drop,
            "throughput": runs,
            "ratio": med["pick"] / med["fp32 eager"] if med["fp32 eager"] else None,
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = [one(e, args.trials, args.repeats) for e in EXAMPLES]
    print(f"CPU: {cpu_model()} ({_flags()}), Python {platform.python_version()}")
    print(
        "| example | metric | study wall (s) | pick | drop | pick / fp32 eager (median of runs) |"
    )
    print("|---|---|---:|---|---:|---:|")
    for r in results:
        c = r["pick"]
        label = f"bs{c['batch_size']} O{c['optimization_level']} {c['activation_dtype']}"
        if c.get("weight_dtypes"):
            label += f" +{len(c['weight_dtypes'])} weight dtypes"
        pick_tp, plain_tp = (statistics.median(v) for v in r["throughput"].values())
        print(
            f"| {r['example']} | {r['metric'].get('name')} | {r['study_wall_s']} | {label} | "
            f"{r['pick_metric_drop']:.4g} | {r['ratio']:.2f}x "
            f"({pick_tp:,.0f} vs {plain_tp:,.0f} samples/s) |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
