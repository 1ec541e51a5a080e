"""Timing statistics (accuracy metrics are the trial process's: `autotune.child.metrics`).

`Measurement` keeps the raw block times and derives statistics lazily (torch.utils.benchmark's
idea); it is plain Python, so `analysis.trial_rows` rebuilds one from a trial's stored block
times without torch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

NOISY_IQR_RATIO = 0.1  # IQR/median above this marks a trial as noisy


@dataclass(frozen=True)
class Measurement:
    """Timed blocks of `iters_per_block` iterations of `batch_size` samples each."""

    block_times: tuple[float, ...]
    iters_per_block: int
    batch_size: int
    iteration_times: tuple[float, ...] = ()

    @property
    def block_throughputs(self) -> list[float]:
        return [self.iters_per_block * self.batch_size / t for t in self.block_times]

    @property
    def throughput(self) -> float:
        """Median samples/s over blocks."""
        return statistics.median(self.block_throughputs)

    @property
    def throughput_iqr(self) -> float:
        return _iqr(self.block_throughputs)

    @property
    def noisy(self) -> bool:
        return self.throughput_iqr > NOISY_IQR_RATIO * self.throughput

    def latency_ms(self, q: float) -> float:
        """Per-batch latency percentile (host input -> output on host), from iterations."""
        times = sorted(self.iteration_times or [t / self.iters_per_block for t in self.block_times])
        return 1e3 * _quantile(times, q)

    @classmethod
    def merge(cls, measurements: list[Measurement]) -> Measurement:
        """Pool replicate measurements of one config (torch.utils.benchmark's merge):
        block times are extrapolated to one iteration each, so replicates timed with
        different block lengths pool; statistics then run over all blocks at once."""
        if not measurements:
            raise ValueError("nothing to merge")
        batch_sizes = {m.batch_size for m in measurements}
        if len(batch_sizes) != 1:
            raise ValueError(f"cannot merge measurements of batch sizes {sorted(batch_sizes)}")
        return cls(
            tuple(t / m.iters_per_block for m in measurements for t in m.block_times),
            1,
            batch_sizes.pop(),
            tuple(t for m in measurements for t in m.iteration_times),
        )

    def summary(self) -> dict[str, float]:
        return {
            "throughput_samples_per_s": self.throughput,
            "throughput_iqr": self.throughput_iqr,
            "latency_ms_p50": self.latency_ms(0.5),
            "latency_ms_p95": self.latency_ms(0.95),
            "noisy": float(self.noisy),
        }


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _iqr(values: list[float]) -> float:
    s = sorted(values)
    return _quantile(s, 0.75) - _quantile(s, 0.25)
