"""Benchmark: what a trial's compile costs, with and without an environment setting.

    python bench/compile_cost.py --env TORCHINDUCTOR_COMPILE_THREADS=1 [--model mnist]
        [--json OUT]

Every config (batch 8..4096 x level 1/2, bf16, inductor, one stream) is a new inductor graph,
so each trial compiles cold, as most of a study's trials do. Each config runs as a real trial
(the study's protocol, forked from the trial fork server) once per contender, interleaved
(AB, BA, ...): the default environment, and the default plus `--env`; each contender has its
own inductor cache, so neither hits the other's. Reports the median compile seconds (the
trial's `compile_s`: prepare and the first, compiling, iteration), the whole trial process
time, and the throughput each measured (a setting that makes compiling cheaper must not make
the kernels slower). Run it on a quiet machine.
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

from autotune.host import cpu_model
from autotune.jobs import fp32_reference, trial_job
from autotune.launch.runner import RunnerSettings, run_job
from autotune.study_options import StudyOptions
from autotune.wire import TrialConfig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--env", required=True, help="NAME=VALUE, the second contender's")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    name, _, value = args.env.partition("=")
    configs = [
        TrialConfig(args.model, "cpu", 2**e, optimization_level=level, activation_dtype="bf16")
        for level in (1, 2)
        for e in range(3, 13)
    ]
    with tempfile.TemporaryDirectory(prefix="compile-cost-") as tmp:
        contenders = {}
        for label, env in (("default", {}), (args.env, {name: value})):
            cache = Path(tmp) / label.replace("/", "_")
            contenders[label] = RunnerSettings(cache_dir=cache, timeout_s=600, extra_env=env)
        first = next(iter(contenders.values()))
        ref = fp32_reference(args.model, 1, first, first.cache_dir)
        opts = StudyOptions(args.model, eval_limit=1)
        rows: dict[str, list[dict[str, float]]] = {label: [] for label in contenders}
        for i, config in enumerate(configs):
            order = list(contenders) if i % 2 == 0 else list(reversed(contenders))
            for label in order:
                result = run_job(
                    replace(trial_job(opts, config, ref), eval_limit=1), contenders[label]
                )
                if not result.ok:
                    print(f"{label} bs{config.batch_size}: {result.status} {result.message}")
                    continue
                rows[label].append(
                    {
                        "compile_s": result.timings["compile_s"],
                        "process_s": result.timings["process_s"],
                        "throughput": result.metrics["throughput_samples_per_s"],
                    }
                )
                print(
                    f"{label:>34} bs{config.batch_size:<5} O{config.optimization_level}: "
                    f"compile {result.timings['compile_s']:.2f} s, "
                    f"{result.metrics['throughput_samples_per_s']:,.0f}/s",
                    flush=True,
                )
    print(f"\n{cpu_model()}, {len(configs)} configs, each compiled cold once per contender\n")
    print("| contender | compile s (median) | trial process s (sum) | throughput vs default |")
    print("|---|---:|---:|---:|")
    summary = {}
    for label, rs in rows.items():
        ratios = [
            r["throughput"] / d["throughput"] for r, d in zip(rs, rows["default"], strict=False)
        ]
        summary[label] = {
            "compile_s_median": statistics.median(r["compile_s"] for r in rs),
            "process_s_sum": sum(r["process_s"] for r in rs),
            "throughput_ratio_median": statistics.median(ratios),
            "rows": rs,
        }
        s = summary[label]
        print(
            f"| {label} | {s['compile_s_median']:.2f} | {s['process_s_sum']:.0f} | "
            f"{s['throughput_ratio_median']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "contenders": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
