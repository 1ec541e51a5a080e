"""Does a config measure the same in a fresh process as in a trial forked from the server?

    python bench/fresh_vs_forked.py [--model M] [--batch-size 256] [--level 0]
        [--dtype bf16] [--streams 2] [--rounds 3] [--env NAME=VALUE ...] [--json OUT]

The same trial job (the study's protocol), run alternately (ABBA...) in a process forked from
the trial fork server and in a freshly spawned interpreter, `--rounds` times each; `--env`
adds one more contender, a spawned interpreter with that environment (e.g. glibc's
``MALLOC_TOP_PAD_=268435456``). A user's process is a fresh one: where it is slower, the
study's figures are not what the user gets (`autotune/backends/heap.py` is the fix this
measured). Reports each contender's median samples/s and its ratio to the forked one, with
the CPU and the load other processes put on it during each timing. Run it on a quiet
machine.
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
    ap.add_argument("--model", default="studies/examples/token_classifier.py:STUDY")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--level", type=int, default=0)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE, a third contender")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    knobs = (("compiler", "inductor"), ("streams", args.streams), ("channels_last", False))
    config = TrialConfig(
        args.model,
        "cpu",
        args.batch_size,
        optimization_level=args.level,
        activation_dtype=args.dtype,
        knobs=knobs,
    )
    with tempfile.TemporaryDirectory(prefix="fresh-vs-forked-") as tmp:
        cache = Path(tmp) / "cache"
        forked = RunnerSettings(cache_dir=cache, timeout_s=600)
        modes = {"forked": forked, "fresh": replace(forked, fork_trials=False)}
        if args.env:
            extra = dict(e.split("=", 1) for e in args.env)
            modes["fresh " + " ".join(args.env)] = replace(modes["fresh"], extra_env=extra)
        ref = fp32_reference(args.model, 1000, modes["fresh"], cache)
        job = trial_job(
            StudyOptions(args.model, eval_limit=1000), config, replace(ref, metric_value=None)
        )
        runs: dict[str, list[dict[str, float | None]]] = {m: [] for m in modes}
        for r in range(args.rounds):
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                result = run_job(job, modes[mode])
                if not result.ok:
                    print(f"{mode}: {result.status} {result.message}", file=sys.stderr)
                    return 1
                m = result.metrics
                runs[mode].append(
                    {
                        "samples_per_s": m["throughput_samples_per_s"],
                        "load": m.get("host_load_cores"),
                    }
                )
                print(f"round {r + 1} {mode}: {m['throughput_samples_per_s']:,.0f} samples/s")

    med = {k: statistics.median(x["samples_per_s"] for x in v) for k, v in runs.items()}
    label = f"bs{args.batch_size} O{args.level} {args.dtype} streams={args.streams}"
    print(f"{args.model} {label} on {cpu_model()}, {usable_cores()} cores, {args.rounds} rounds")
    for mode, v in med.items():
        print(f"{mode:40} {v:12,.0f}  {v / med['forked']:.2f}x forked")
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu_model(), "config": label, "median": med, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
