"""One trial in the trial process: build, apply the config, compile, warm up, time the loop
users run, and evaluate against the fp32 reference."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotune import defaults, pytree
from autotune.backends.streams import STREAMS_NAME, run_streams
from autotune.child.batches import eval_outputs, eval_set, host_batch, to_device, to_host
from autotune.child.environment import environment
from autotune.child.load import BUSY_CORES, LoadProbe
from autotune.child.metrics import MetricError, score
from autotune.measure import Measurement, percentile_key
from autotune.wire import Status, TrialJob, TrialResult

if TYPE_CHECKING:
    from autotune.backends import Backend
    from studies import Study

STABLE_IQR_RATIO = 0.03  # blocks agreeing this well end the timing early
# A trial whose settled warm-up latency is this far over the budget stops there: its
# percentile can only be higher than the median.
OVER_BUDGET = 1.25
# Timings repeated when other processes used the CPU meanwhile, after a pause: a short
# burst of load passes; a lasting one makes every trial alike, and the interleaved
# re-measurements at the end compare configs under the same load.
BUSY_RETRIES = 1
BUSY_PAUSE_S = 1.0
# Block throughput that moved by more than this between the halves of a timing (a load
# that /proc/stat cannot show, clocks, a warm-up not yet settled) is timed again alike.
DRIFT_RATIO = 0.15
# A warm-up ends early, after at least this share of `warmup_seconds`, once the medians of
# its last two windows of SETTLED_WINDOW iterations agree within SETTLED_RATIO.
SETTLED_SHARE = 0.3
SETTLED_WINDOW = 5
SETTLED_RATIO = 0.03


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
        x = host_batch(backend, study.example_input(cfg.batch_size), cfg)
        if pytree.rows(x) != cfg.batch_size:
            raise pytree.BatchError(f"example_input({cfg.batch_size}) gave {pytree.rows(x)} rows")

        def stepper(batch: Any) -> Any:
            return lambda: to_host(backend, pytree.call(run, to_device(backend, batch, cfg)))

        step = stepper(x)
        # Each further stream runs the loop on a batch of its own (`_measure_streams`).
        streams = cfg.knob_map.get(STREAMS_NAME, 1)
        steps = [
            step,
            *(stepper(pytree.tree_map(lambda t: t.clone(), x)) for _ in range(1, streams)),
        ]

        # At least `warmup_iters` iterations (the 1st compiles, the 2nd captures a trace),
        # then on until the iteration times settle (`warm_enough`): CPU kernels, allocator
        # caches and clocks take tens of iterations to, and timing them would understate
        # throughput.
        warmup = [_timed(step)]
        warm_start = time.perf_counter()
        warm_probe = LoadProbe.start()
        while not warm_enough(job, warmup, time.perf_counter() - warm_start):
            warmup.append(_timed(step))
        backend.synchronize()
        timings["compile_s"] = timings["prepare_s"] + warmup[0]  # 1st iteration compiles
        timings["warmup_s"] = sum(warmup[1:])
        settled_s = statistics.median(warmup[1:][-5:] or warmup)
        # Several streams: at best each as fast as the lone one was.
        settled = streams * cfg.batch_size / settled_s
        # On a busy machine the warm-up says little (bf16 once settled at 639 samples/s
        # beside a compile job, 25k quiet): no stop on it; the timing, repeated under load
        # (`_measure_quietly`), decides.
        warm_load = warm_probe.others_cores()
        busy = warm_load is not None and warm_load > BUSY_CORES
        stopped = None if busy else _stopped_after_warmup(job, settled, 1e3 * settled_s)
        if stopped is not None:
            return TrialResult(
                status=Status.SLOW,
                message=stopped,
                metrics={
                    "throughput_samples_per_s": settled,
                    percentile_key(job.latency_percentile): 1e3 * settled_s,
                    "batch_size": cfg.batch_size,
                },
                timings=timings,
                environment=environment(backend),
            )

        start = time.perf_counter()
        timings_taken = _measure_quietly(steps, backend, job, warmup[-1])
        kept = min(timings_taken, key=_Timing.badness)
        measurement = kept.measurement
        timings["measure_s"] = time.perf_counter() - start

        start = time.perf_counter()
        inputs, labels = eval_set(job, study)
        outputs = eval_outputs(run, backend, study, inputs, cfg)
        timings["eval_s"] = time.perf_counter() - start

    metrics: dict[str, Any] = {
        **measurement.summary(job.latency_percentile),
        "batch_size": cfg.batch_size,
    }
    if kept.load is not None:
        metrics["host_load_cores"] = round(kept.load, 3)
    metrics["throughput_drift"] = round(kept.measurement.drift, 4)
    message = _disturbed_message(timings_taken, kept)
    result = TrialResult(
        status=Status.OK,
        message=message,
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
    metric = study.scoring(labels is not None)
    try:
        metrics.update(score(outputs, reference, labels, metric, job.reference_metric))
    except MetricError as exc:  # the study's own metric: a failed trial with the reason
        result.status, result.message = Status.METRIC_ERROR, str(exc)
    return result


def warm_enough(job: TrialJob, iterations: list[float], elapsed: float) -> bool:
    """Whether a warm-up of `iterations` (the 1st the compile) over `elapsed` seconds is
    done: `warmup_iters` iterations, and either `warmup_seconds` or, after SETTLED_SHARE of
    them, two windows of SETTLED_WINDOW iterations whose medians agree within
    SETTLED_RATIO (measured in bench/warmup_settle.py: the timing that follows sees the
    throughput a full warm-up's would)."""
    if len(iterations) < job.warmup_iters:
        return False
    if elapsed >= job.warmup_seconds:
        return True
    if elapsed < SETTLED_SHARE * job.warmup_seconds or len(iterations) < 1 + 2 * SETTLED_WINDOW:
        return False
    last = statistics.median(iterations[-SETTLED_WINDOW:])
    before = statistics.median(iterations[-2 * SETTLED_WINDOW : -SETTLED_WINDOW])
    return abs(last - before) <= SETTLED_RATIO * last


def _timed(step: Any) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _stopped_after_warmup(job: TrialJob, throughput: float, latency_ms: float) -> str | None:
    """Why a trial stops after warm-up, neither timed nor evaluated: clearly losing (the
    rule and its threshold are the tuner's, `autotune.pruning`), or clearly over the latency
    budget (its settled median latency already is, by OVER_BUDGET)."""
    if job.stop_below is not None and throughput < job.stop_below:
        return (
            f"stopped after warm-up: {throughput:,.0f} samples/s, under "
            f"{job.stop_below:,.0f} (a fraction of the best so far)"
        )
    budget = job.latency_budget_ms
    if budget is not None and latency_ms > OVER_BUDGET * budget:
        return (
            f"stopped after warm-up: {latency_ms:.3g} ms per batch, over the latency budget "
            f"of {budget:g} ms"
        )
    return None


@dataclass(frozen=True)
class _Timing:
    """One timing of a trial and what disturbed it: others' CPU use in cores (None where
    /proc/stat cannot tell) and the drift of its block throughput."""

    measurement: Measurement
    load: float | None

    @property
    def busy(self) -> bool:
        return self.load is not None and self.load > BUSY_CORES

    @property
    def drifted(self) -> bool:
        return abs(self.measurement.drift) > DRIFT_RATIO

    def badness(self) -> tuple[bool, float, float]:
        """Undisturbed first, then the quietest, then the steadiest."""
        return (self.busy or self.drifted, self.load or 0.0, abs(self.measurement.drift))


def _measure_quietly(
    steps: list[Any], backend: Backend, job: TrialJob, per_iter_estimate: float
) -> list[_Timing]:
    """`_measure`, repeated (at most BUSY_RETRIES more times, after a pause) while the
    timing was disturbed: other processes used more than BUSY_CORES of the CPU meanwhile (a
    busy machine distorts the figure by up to 4x), or its block throughput drifted by more
    than DRIFT_RATIO. Every timing taken, in order."""
    taken: list[_Timing] = []
    for attempt in range(1 + BUSY_RETRIES):
        if attempt:
            time.sleep(BUSY_PAUSE_S * attempt)
        probe = LoadProbe.start()
        measurement = _measure(steps, backend, job, per_iter_estimate)
        taken.append(_Timing(measurement, probe.others_cores()))
        if not (taken[-1].busy or taken[-1].drifted):
            break
    return taken


def _disturbed_message(taken: list[_Timing], kept: _Timing) -> str:
    """One line on why a trial was timed again ("" when it was not)."""
    if len(taken) < 2:
        return ""
    first = taken[0]
    why = []
    if first.busy:
        why.append(f"busy machine: other processes used {first.load:.2f} cores while timing")
    if first.drifted:
        why.append(f"block throughput drifted {first.measurement.drift:+.0%} while timing")
    load = f", {kept.load:.2f} cores" if kept.load is not None else ""
    return (
        f"{'; '.join(why)}; timed {len(taken)} times, kept the least disturbed "
        f"(drift {kept.measurement.drift:+.0%}{load})"
    )


def _measure(
    steps: list[Any], backend: Backend, job: TrialJob, per_iter_estimate: float
) -> Measurement:
    """Time blocks of iterations (sync at block ends), as torch.utils.benchmark's
    adaptive_autorange does: stop once `min_blocks` blocks agree (IQR/median of block
    throughput under STABLE_IQR_RATIO), else go on up to `measure_seconds`. Where the study
    constrains a latency percentile, timing also goes on until `min_iterations` iterations
    were timed (at most defaults.LATENCY_TIME_CAP x `measure_seconds`). With several
    streams (`autotune.backends.streams`) every stream times its own blocks concurrently; a
    block is then a round of the streams' concurrent blocks, at their summed throughput."""
    target_block = job.measure_seconds / (4 * job.min_blocks)
    iters = max(1, round(target_block / max(per_iter_estimate, 1e-6)))
    if len(steps) > 1:
        return _measure_streams(steps, job, iters)
    (step,) = steps
    blocks: list[float] = []
    iterations: list[float] = []
    while not _timed_enough(job, blocks, iters, len(iterations)):
        block_start = time.perf_counter()
        last = block_start
        for _ in range(iters):
            step()
            now = time.perf_counter()
            iterations.append(now - last)
            last = now
        backend.synchronize()
        blocks.append(time.perf_counter() - block_start)
    return Measurement(tuple(blocks), iters, job.config.batch_size, tuple(iterations))


def _measure_streams(steps: list[Any], job: TrialJob, iters: int) -> Measurement:
    """`_measure` on `streams` concurrent streams (CPU backends only: synchronous, so a
    block's end needs no sync), after a concurrent warm-up: the single-stream warm-up
    compiled the model, but the streams' caches and the machine's clocks settle together.
    Latencies are every request's, pooled over the streams."""
    import torch

    threads = torch.get_num_threads()  # the per-stream count `prepare` set
    streams = len(steps)
    warm_end = time.perf_counter() + job.warmup_seconds
    run_streams(steps, threads, iters, lambda _: time.perf_counter() >= warm_end)
    times = run_streams(
        steps,
        threads,
        iters,
        lambda t: _timed_enough(
            job, t.aggregate(), iters * streams, sum(len(i) for i in t.iterations)
        ),
    )
    blocks = times.aggregate()
    iterations = [x for stream in times.iterations for x in stream]
    return Measurement(tuple(blocks), iters * streams, job.config.batch_size, tuple(iterations))


def _timed_enough(job: TrialJob, blocks: list[float], iters: int, iterations: int) -> bool:
    """Whether `blocks` (of `iters` iterations each) end the timing (`_measure`'s rule)."""
    spent = sum(blocks)
    cap = defaults.LATENCY_TIME_CAP * job.measure_seconds
    return not (
        len(blocks) < job.min_blocks
        or (spent < job.measure_seconds and not _stable(blocks, iters, job.config.batch_size))
        or (iterations < job.min_iterations and spent < cap)
    )


def _stable(blocks: list[float], iters: int, batch_size: int) -> bool:
    m = Measurement(tuple(blocks), iters, batch_size)
    return m.throughput_iqr <= STABLE_IQR_RATIO * m.throughput
