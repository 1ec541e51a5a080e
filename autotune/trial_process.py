"""Child entry point: ``python -m autotune.trial_process JOB.json RESULT.json``.

One trial per process: device runtimes keep process-global state (compile options, weight
overrides, caches), so a fresh process is the only honest isolation. The trial process always
writes a TrialResult, failures included; it imports nothing the tuner alone needs (no
optuna), so it runs in any interpreter with torch and the backend's device libraries.
"""

from __future__ import annotations

import faulthandler
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.backends import Backend, get_backend
from autotune.config import JobMode, Status, TrialJob, TrialResult
from autotune.measure import Measurement, accuracy_metrics
from studies import Study, get_study

if TYPE_CHECKING:
    import torch

_ENV_PREFIXES = ("TORCH", "OMP_", "MKL_", "TT_", "CUDA_", "XLA_", "PJRT_")
STABLE_IQR_RATIO = 0.03  # blocks agreeing this well end the timing early


def main(argv: list[str], preloaded_bytes: int = 0) -> int:
    """`preloaded_bytes`: data a fork server's child inherited beyond a fresh interpreter
    with torch (`autotune.forkserver`); not the trial's, so not charged to its memory limit."""
    if len(argv) != 2:
        print("usage: python -m autotune.trial_process JOB.json RESULT.json", file=sys.stderr)
        return 2
    # A native crash (segfault in a kernel or runtime) then leaves the Python stack on stderr,
    # which the tuner keeps on the trial.
    faulthandler.enable()
    job = TrialJob.from_dict(json.loads(Path(argv[0]).read_text()))
    if job.memory_limit_bytes:
        import resource

        # RLIMIT_DATA makes allocations fail for real (torch raises), unlike RSS limits.
        limit = job.memory_limit_bytes + preloaded_bytes
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    backend = get_backend(job.config.backend)
    started = time.perf_counter()
    try:
        run = {
            JobMode.TRIAL: run_trial,
            JobMode.REFERENCE: run_reference,
            JobMode.SENSITIVITY: run_sensitivity,
        }[job.mode]
        result = run(job, get_study(job.config.model), backend)
    except Exception as exc:  # failure is a value: classify it and report it
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        status = backend.classify(f"{type(exc).__name__}: {exc}\n{text}") or Status.CRASH
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result = TrialResult(status=status, message=f"{type(exc).__name__}: {message}"[:500])
    result.timings["trial_s"] = time.perf_counter() - started
    result.write(Path(argv[1]))
    return 0


def run_trial(job: TrialJob, study: Study, backend: Backend) -> TrialResult:
    import torch

    cfg = job.config
    timings: dict[str, float] = {}
    with torch.no_grad():
        start = time.perf_counter()
        backend.initialize(cfg)
        run = backend.prepare(study.build_model(), cfg)
        timings["prepare_s"] = time.perf_counter() - start
        # Made once, outside the timed loop (e.g. tt's bf16 input, as the reference recipe does).
        x = backend.host_input(study.example_input(cfg.batch_size), cfg)

        def step() -> torch.Tensor:
            return backend.to_host(run(backend.to_device(x, cfg)))

        # At least `warmup_iters` iterations (the 1st compiles, the 2nd captures a trace),
        # then on until `warmup_seconds` have passed: CPU kernels, allocator caches and clocks
        # take tens of iterations to settle, and timing them would understate throughput.
        warmup = [_timed(step)]
        warm_start = time.perf_counter()
        while (
            len(warmup) < job.warmup_iters or time.perf_counter() - warm_start < job.warmup_seconds
        ):
            warmup.append(_timed(step))
        backend.synchronize()
        timings["compile_s"] = timings["prepare_s"] + warmup[0]  # 1st iteration compiles
        timings["warmup_s"] = sum(warmup[1:])
        settled = cfg.batch_size / statistics.median(warmup[1:][-5:] or warmup)
        if job.stop_below is not None and settled < job.stop_below:
            return TrialResult(
                status=Status.SLOW,
                message=f"stopped after warm-up: {settled:,.0f} samples/s, under "
                f"{job.stop_below:,.0f} (a fraction of the best so far)",
                metrics={"throughput_samples_per_s": settled, "batch_size": cfg.batch_size},
                timings=timings,
                environment=environment(backend),
            )

        start = time.perf_counter()
        measurement = _measure(step, backend, job, per_iter_estimate=warmup[-1])
        timings["measure_s"] = time.perf_counter() - start

        start = time.perf_counter()
        inputs, labels = _eval_set(job, study)
        outputs = _evaluate(run, backend, job, inputs)
        timings["eval_s"] = time.perf_counter() - start

    metrics: dict[str, Any] = {**measurement.summary(), "batch_size": cfg.batch_size}
    result = TrialResult(
        status=Status.OK,
        metrics=metrics,
        timings=timings,
        block_times=list(measurement.block_times),
        iters_per_block=measurement.iters_per_block,
        environment=environment(backend),
    )
    if not torch.isfinite(outputs).all():
        result.status = Status.NAN
        result.message = "model outputs contain NaN or inf"
        return result
    reference = torch.load(job.reference_path, map_location="cpu", weights_only=True)
    if job.eval_limit:
        reference = reference[: job.eval_limit]
    metrics.update(accuracy_metrics(outputs, reference, labels, job.reference_accuracy))
    return result


def run_reference(job: TrialJob, study: Study, backend: Backend) -> TrialResult:
    """fp32 eager outputs on CPU, the baseline every trial's accuracy is measured against:
    from the cache in `job.cache_dir`, or computed and stored there (`autotune.reference`)."""
    from autotune import reference

    inputs, labels = _eval_set(job, study)
    return reference.run(job, study, inputs, labels, environment(backend))


def run_sensitivity(job: TrialJob, study: Study, backend: Backend) -> TrialResult:
    """Accuracy with one weight at a time lowered (`autotune.sensitivity`), cached."""
    from autotune import sensitivity

    inputs, labels = _eval_set(job, study)
    return sensitivity.run(job, study, backend, inputs, labels, environment(backend))


def _eval_set(job: TrialJob, study: Study) -> tuple[torch.Tensor, torch.Tensor | None]:
    inputs, labels = study.eval_data()
    if job.eval_limit:
        inputs = inputs[: job.eval_limit]
        labels = labels[: job.eval_limit] if labels is not None else None
    return inputs, labels


def _timed(step: Any) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _measure(step: Any, backend: Backend, job: TrialJob, per_iter_estimate: float) -> Measurement:
    """Time blocks of iterations (sync at block ends), as torch.utils.benchmark's
    adaptive_autorange does: stop once `min_blocks` blocks agree (IQR/median of block
    throughput under STABLE_IQR_RATIO), else go on up to `measure_seconds`."""
    target_block = job.measure_seconds / (4 * job.min_blocks)
    iters = max(1, round(target_block / max(per_iter_estimate, 1e-6)))
    blocks: list[float] = []
    iterations: list[float] = []
    spent = 0.0
    while len(blocks) < job.min_blocks or (
        spent < job.measure_seconds and not _stable(blocks, iters, job.config.batch_size)
    ):
        block_start = time.perf_counter()
        last = block_start
        for _ in range(iters):
            step()
            now = time.perf_counter()
            iterations.append(now - last)
            last = now
        backend.synchronize()
        blocks.append(time.perf_counter() - block_start)
        spent += blocks[-1]
    return Measurement(tuple(blocks), iters, job.config.batch_size, tuple(iterations))


def _stable(blocks: list[float], iters: int, batch_size: int) -> bool:
    m = Measurement(tuple(blocks), iters, batch_size)
    return m.throughput_iqr <= STABLE_IQR_RATIO * m.throughput


def _evaluate(run: Any, backend: Backend, job: TrialJob, inputs: torch.Tensor) -> torch.Tensor:
    """Outputs for the eval set at the trial's batch size (last batch zero-padded, so a
    compiled model sees one shape only)."""
    import torch

    bs = job.config.batch_size
    n = len(inputs)
    pad = (-n) % bs
    if pad:
        inputs = torch.cat([inputs, inputs.new_zeros((pad, *inputs.shape[1:]))])
    outs = [backend.to_host(run(backend.to_device(c, job.config))) for c in inputs.split(bs)]
    return torch.cat(outs).float()[:n]


def environment(backend: Backend) -> dict[str, Any]:
    """Everything that changes the answer: versions, device, threads, relevant env."""
    import torch

    return {
        "device": backend.device_name(),
        "versions": {"python": platform.python_version(), **backend.versions()},
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
        # e.g. whether bf16 ran natively or in fp32 rounded to bf16 (emulated TT)
        **({"numerics": numerics} if (numerics := backend.numerics()) else {}),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
