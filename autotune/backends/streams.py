"""Inference streams on the CPU: N threads, each running the user's loop on its own batches
with its share of the cores as intra-op threads.

One stream with every core leaves cores idle in small ops and in the serial parts of each
call (Python dispatch, input conversion, the copy back); N streams with cores/N threads each
fill those gaps with another request's work. OpenVINO's THROUGHPUT hint runs one stream per
core for this reason, and serving stacks search the same knob (Triton's instance count).
Streams share the model's weights (one process); each holds its own batch and outputs.

Threads: torch's intra-op count is per calling thread under OpenMP (``omp_set_num_threads``
sets the calling thread's ICV), so each stream thread sets its own; inductor's C++ kernels
bake the count in at code generation, so the model must first be compiled by a thread that
already runs with the per-stream count (`enter_stream` before the first call).

The tuner side reads only `STREAMS` and `stream_choices` (no torch import).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from autotune.backends.base import Knob
from autotune.host import usable_cores

STREAMS_NAME = "streams"


def stream_choices(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to `cores`: a stream needs at least one core of its own."""
    return tuple(2**i for i in range(max(1, cores).bit_length()))


STREAMS = Knob(
    STREAMS_NAME,
    stream_choices(usable_cores()),
    "concurrent inference streams (threads), each with cores/streams intra-op threads and "
    "its own batches; throughput is their sum, latency each request's",
)


def stream_threads(total: int, streams: int) -> int:
    """Intra-op threads per stream when `streams` share `total` threads (at least 1)."""
    return max(1, total // max(1, streams))


def enter_stream(threads: int) -> None:
    """Make the calling thread an inference stream: torch ops on `threads` intra-op threads,
    and no autograd (grad mode is per thread: a new thread records graphs, and a compiled
    model then guards on it and recompiles)."""
    import torch

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)


def enter_config_streams(streams: int) -> None:
    """In the thread that compiles a config with `streams` streams (a trial's main thread,
    `apply_config`'s caller): run on one stream's share of this process's threads, so that
    the compiled kernels are made for it (a no-op for one stream)."""
    import torch

    if streams > 1:
        enter_stream(stream_threads(torch.get_num_threads(), streams))


@dataclass
class StreamTimes:
    """What each stream timed: per stream, its blocks' seconds and its iterations' seconds."""

    blocks: list[list[float]] = field(default_factory=list)
    iterations: list[list[float]] = field(default_factory=list)

    def complete_blocks(self) -> int:
        """Blocks every stream has finished (the k-th blocks ran concurrently)."""
        return min((len(b) for b in self.blocks), default=0)

    def aggregate(self) -> list[float]:
        """One block time per concurrent round of blocks, for the streams together: a round
        moved `streams` x `iters` batches at the summed rate of its streams, so its time is
        streams / sum(1 / t) (the harmonic mean of the streams' block times)."""
        k = self.complete_blocks()
        n = len(self.blocks)
        return [n / sum(1.0 / b[i] for b in self.blocks) for i in range(k)]


def run_streams(
    steps: list[Callable[[], Any]],
    threads: int,
    iters: int,
    done: Callable[[StreamTimes], bool],
    poll_s: float = 0.05,
) -> StreamTimes:
    """Run every step of `steps` (one per stream) in its own thread, free-running in blocks of
    `iters` iterations, until `done(times)` says enough was timed. All start together, and
    all run until the end: a stream that stopped early would leave the others the whole
    machine and inflate their last blocks. A block cut off by the stop is dropped."""
    n = len(steps)
    times = StreamTimes([[] for _ in steps], [[] for _ in steps])
    start = threading.Barrier(n + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            enter_stream(threads)
            start.wait()
            while not stop.is_set():
                block_start = last = time.perf_counter()
                its = []
                for _ in range(iters):
                    steps[i]()
                    now = time.perf_counter()
                    its.append(now - last)
                    last = now
                    if stop.is_set():
                        return
                times.iterations[i].extend(its)
                times.blocks[i].append(last - block_start)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            stop.set()
            start.abort()

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for w in workers:
        w.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: raised below
        start.wait()
    while not stop.is_set() and not done(times):
        time.sleep(poll_s)
    stop.set()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return times


class StreamPool:
    """Serve a prepared model on `streams` streams, as a study measured it.

    >>> run = autotune.apply_config(model, "best.json")    # compiles with the stream's threads
    >>> pool = StreamPool(run, streams=autotune.load_config("best.json").knob_map["streams"])
    >>> for out in pool.map(batches): ...                  # batches in, outputs in order

    Each worker thread runs torch ops on its share of the threads (`stream_threads`), the
    count `apply_config` compiled the model with. `map` keeps `streams` batches in flight.
    """

    def __init__(self, run: Callable[..., Any], streams: int, threads: int | None = None) -> None:
        import torch

        self.run = run
        self.streams = max(1, streams)
        self.threads = threads or torch.get_num_threads()
        self._pool = ThreadPoolExecutor(
            self.streams, initializer=enter_stream, initargs=(self.threads,)
        )

    def map(self, batches: Iterable[Any]) -> Iterator[Any]:
        """`run(batch)` for each batch, outputs in order; reads `batches` lazily, keeping two
        per stream in flight (so no stream waits for the caller), so it may be endless."""
        pending: collections.deque[Future[Any]] = collections.deque()
        for batch in batches:
            pending.append(self._pool.submit(self.run, batch))
            if len(pending) >= 2 * self.streams:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> StreamPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
