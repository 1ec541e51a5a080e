"""CPU inference streams: the concurrent timing, the serving pool, and real trials with two
streams on both CPU backends (real trial processes, real torch)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from autotune.backends.streams import StreamPool, StreamTimes, run_streams, stream_threads
from autotune.host import usable_cores
from autotune.jobs import fp32_reference
from autotune.launch.runner import RunnerSettings, run_job
from autotune.measure import Measurement
from autotune.wire import Status, TrialConfig, TrialJob


def test_a_round_of_concurrent_blocks_runs_at_the_summed_rate():
    # Stream 0 did its blocks in 1 s, stream 1 in 0.5 s: together 3 blocks per second, so
    # a round of 2 blocks took 2/3 s; the third block of stream 0 has no partner yet.
    times = StreamTimes(blocks=[[1.0, 1.0, 1.0], [0.5, 0.5]])
    assert times.complete_blocks() == 2
    assert times.aggregate() == pytest.approx([2 / 3, 2 / 3])
    m = Measurement(tuple(times.aggregate()), iters_per_block=2 * 10, batch_size=4)
    assert m.throughput == pytest.approx(10 * 4 / 1.0 + 10 * 4 / 0.5)


def test_threads_per_stream():
    assert stream_threads(16, 4) == 4
    assert stream_threads(2, 2) == 1
    assert stream_threads(2, 4) == 1  # never 0: oversubscribed, each still runs


def test_streams_run_at_once_and_all_run_until_the_end():
    active, peak = [0], [0]
    lock = threading.Lock()

    def step() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.002)
        with lock:
            active[0] -= 1

    times = run_streams([step, step, step], 1, 5, lambda t: t.complete_blocks() >= 4)
    assert peak[0] == 3  # concurrent, not one after the other
    assert times.complete_blocks() >= 4
    assert all(len(b) >= 4 for b in times.blocks)  # none stopped early
    assert all(len(i) == 5 * len(b) for i, b in zip(times.iterations, times.blocks, strict=True))


def test_a_failing_stream_raises_in_the_caller():
    def bad() -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    def fine() -> None:
        time.sleep(0.001)

    with pytest.raises(RuntimeError, match="allocate memory"):
        run_streams([fine, bad], 1, 2, lambda t: False)


def test_stream_pool_keeps_order_and_reads_an_endless_input_lazily():
    import torch

    seen_threads = set()

    def run(x):
        seen_threads.add((threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled()))
        time.sleep(0.001)
        return x * 2

    with StreamPool(run, streams=2, threads=1) as pool:
        outs = list(itertools.islice(pool.map(torch.tensor(i) for i in itertools.count()), 20))
    assert [int(o) for o in outs] == [2 * i for i in range(20)]
    assert {t[1:] for t in seen_threads} == {(1, False)}  # one thread each, no autograd
    assert len({t[0] for t in seen_threads}) == 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return fp32_reference("mnist", 256, RunnerSettings(cache_dir=cache), cache)


@pytest.mark.parametrize("backend", ["cpu", "cpu-emulate-tt"])
def test_a_trial_on_two_streams(backend, reference, tmp_path):
    """Two streams, each a thread with its share of the cores, time their blocks together;
    the trial stores the summed throughput, every request's latency and its thread count."""
    act = "bf16" if backend == "cpu-emulate-tt" else "fp32"
    config = TrialConfig("mnist", backend, 32, activation_dtype=act, knobs=(("streams", 2),))
    job = TrialJob(
        config,
        measure_seconds=0.5,
        warmup_iters=3,
        warmup_seconds=0.2,
        reference_path=str(reference.path),
        reference_metric=reference.metric_value,
        eval_limit=256,
    )
    result = run_job(job, RunnerSettings(timeout_s=300, cache_dir=tmp_path))
    assert result.status == Status.OK, result.message
    m = Measurement(tuple(result.block_times), result.iters_per_block, 32)
    assert result.iters_per_block % 2 == 0  # a block is a round of both streams' blocks
    # Stored to 6 significant digits (`measure.stored_figure`).
    assert m.throughput == pytest.approx(result.metrics["throughput_samples_per_s"], rel=1e-5)
    assert result.metrics["iterations"] >= len(result.block_times) * result.iters_per_block
    assert result.metrics["latency_ms_p95"] > 0
    assert result.environment["threads"] == stream_threads(usable_cores(), 2)
    assert result.metrics["metric_drop"] <= 0.5  # the eval ran on the same compiled model
