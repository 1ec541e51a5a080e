"""Benchmark: hand-picked CPU configs of the MNIST study, each in its own trial process.

    python bench/cpu_configs.py [--repeats 2] [--json OUT]

The points of reference for the tuner's result: the reference recipe (batch 64, bf16, highest
level), fp32 eager, and the uniform-bf16 configs around the known sweet spot, measured with
the study's own protocol (1 s timed after 0.5 s warm-up), interleaved `--repeats` times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from autotune.jobs import fp32_reference, trial_job
from autotune.launch.runner import RunnerSettings, run_job
from autotune.study_options import StudyOptions
from autotune.wire import TrialConfig

LAYERS = ("conv1", "conv2", "fc1", "fc2")
# (label, batch, level, dtype for activations and all weights, channels_last)
CONFIGS = [
    ("fp32 eager (batch 64)", 64, 0, "fp32", False),
    ("reference recipe: batch 64, bf16, level 2", 64, 2, "bf16", False),
    ("batch 64, bf16, level 2, channels_last", 64, 2, "bf16", True),
    ("batch 256, bf16, level 1, channels_last", 256, 1, "bf16", True),
    ("batch 256, bf16, level 2, channels_last", 256, 2, "bf16", True),
    ("batch 1024, bf16, level 2, channels_last", 1024, 2, "bf16", True),
    ("batch 256, fp32, level 2, channels_last", 256, 2, "fp32", True),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = RunnerSettings(cache_dir=Path(tmp) / "cache")
        ref = fp32_reference("mnist", None, settings, Path(tmp) / "cache")
        opts = StudyOptions("mnist", measure_seconds=1.0)  # the study's protocol, full eval set
        samples: dict[str, list[float]] = {c[0]: [] for c in CONFIGS}
        for _ in range(args.repeats):
            for label, bs, level, dtype, cl in CONFIGS:
                config = TrialConfig(
                    "mnist",
                    "cpu",
                    bs,
                    level,
                    False,
                    dtype,
                    tuple((f"{n}.weight", dtype) for n in LAYERS),
                    (("channels_last", cl),),
                )
                job = trial_job(opts, config, ref)
                result = run_job(job, settings)
                samples[label].append(result.metrics.get("throughput_samples_per_s", 0.0))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    seed = medians[CONFIGS[1][0]]
    for label, value in medians.items():
        print(f"{label:45s} {value:10,.0f} samples/s  {value / seed:5.2f}x seed")
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
