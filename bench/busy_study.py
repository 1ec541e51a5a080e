"""Benchmark: does a light background load change a study's pick?

    python bench/busy_study.py [--trials 50] [--duty 0.5] [--repeats 3] [--json OUT]

Runs the README's study (`autotune study --model mnist --trials N`) twice in fresh
storages: once on a quiet machine, once beside a controlled background job (one process
that spins for `--duty` of every 100 ms and sleeps the rest: a light load on one core,
like a CI job or an editor's indexer). Then, with the load stopped, both picks are timed
`--repeats` times each, alternating (ABBA), in fresh trial processes with the study's
protocol, in one run: the ratio of their medians says whether the busy study picked
within noise of the quiet one. Each study's wall time, pick and convergence line are
reported with the CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autotune.analysis import best_feasible, trial_rows
from autotune.jobs import fp32_reference, trial_job
from autotune.launch.runner import RunnerSettings, run_job
from autotune.records import study_record
from autotune.storage import load_study
from autotune.study_options import StudyOptions
from autotune.tables import config_label
from autotune.wire import TrialConfig


def spin(duty: float, stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        while time.perf_counter() - start < duty * 0.1:
            pass
        time.sleep((1 - duty) * 0.1)


def study(work: Path, trials: int, cache: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autotune",
            "study",
            "--model",
            "mnist",
            "--trials",
            str(trials),
            "--no-progress",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
        check=True,
    )
    wall = time.perf_counter() - start
    storage = f"sqlite:///{work / 'autotune.db'}"
    s = load_study(storage, "mnist-cpu")
    rows = trial_rows(s)
    pick = best_feasible(rows)
    said = [line for line in proc.stderr.splitlines() if "converged" in line]
    return {
        "wall_s": wall,
        "trials": sum(1 for r in rows if r.state in ("COMPLETE", "PRUNED", "FAIL")),
        "busy_lines": sum("busy machine" in line for line in proc.stderr.splitlines()),
        "pick": pick.config,
        "pick_label": config_label(pick.config),
        "pick_throughput": pick.confirmed_throughput,
        "conclusion": said[-1] if said else None,
        "storage": storage,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--duty", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    out: dict = {"cpu": cpu, "cores": os.cpu_count(), "trials": args.trials, "duty": args.duty}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        for name in ("quiet", "busy"):
            (root / name).mkdir()
        out["quiet"] = study(root / "quiet", args.trials, cache)
        stop = multiprocessing.Event()
        load = multiprocessing.Process(target=spin, args=(args.duty, stop), daemon=True)
        load.start()
        try:
            out["busy"] = study(root / "busy", args.trials, cache)
        finally:
            stop.set()
            load.join()
        # Both picks, alternating, quiet machine, one run.
        opts = StudyOptions.from_study(
            study_record(load_study(out["quiet"]["storage"], "mnist-cpu"))
        )
        runner = RunnerSettings(cache_dir=cache)
        ref = fp32_reference("mnist", opts.eval_limit, runner, cache)
        figures: dict[str, list[float]] = {"quiet": [], "busy": []}
        order = ["quiet", "busy", "busy", "quiet"] * ((args.repeats + 1) // 2)
        for name in order[: 2 * args.repeats]:
            config = TrialConfig.from_dict(out[name]["pick"])
            result = run_job(trial_job(opts, config, ref), runner)
            figures[name].append(result.metrics.get("throughput_samples_per_s") or 0.0)
        out["remeasured"] = figures
        out["busy_over_quiet"] = statistics.median(figures["busy"]) / statistics.median(
            figures["quiet"]
        )
    for name in ("quiet", "busy"):
        r = out[name]
        print(
            f"{name}: {r['wall_s']:.0f} s, {r['trials']} trials, pick {r['pick_label']} "
            f"({r['pick_throughput']:,.0f}/s); {r['busy_lines']} busy lines; {r['conclusion']}"
        )
    print(
        f"re-measured together: busy pick / quiet pick = {out['busy_over_quiet']:.3f} "
        f"({out['remeasured']})  [{cpu}, {os.cpu_count()} cores]"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
