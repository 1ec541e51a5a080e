"""Timing statistics (accuracy metrics are the trial process's: `autotune.child.metrics`).

`Measurement` keeps the raw block times and derives statistics lazily (torch.utils.benchmark's
idea); it is plain Python, so `analysis.trial_rows` rebuilds one from a trial's stored block
times without torch.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

NOISY_IQR_RATIO = 0.1  # IQR/median above this marks a trial as noisy
CI_LEVEL = 0.95  # confidence level of every interval autotune reports
Z_95 = 1.959963984540054
# A latency percentile is measured once at least this many timed iterations lie beyond it
# (p95: 200 iterations, p99: 1000): the rule `TrialJob.min_iterations` applies.
TAIL_ITERATIONS = 10


def quantile_ci(values: list[float], q: float) -> tuple[float, float]:
    """95% distribution-free confidence interval of the q-quantile of `values`: the order
    statistics whose ranks bound the binomial(n, q) count below the quantile (normal
    approximation to the binomial, as in Conover's "Practical Nonparametric Statistics",
    section 3.2). With few values it widens to the extremes (5 blocks: [min, max], 94%)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("no values")
    half = Z_95 * math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(n * q - half) - 1)  # 0-based ranks
    hi = min(n - 1, math.ceil(n * q + half))
    return s[lo], s[hi]


def min_iterations(percentile: float) -> int:
    """Timed iterations a latency percentile needs (TAIL_ITERATIONS beyond it)."""
    return math.ceil(TAIL_ITERATIONS / max(1e-9, 1 - percentile / 100))


def percentile_key(percentile: float) -> str:
    """The metric name of a latency percentile: 95 -> 'latency_ms_p95'."""
    return f"latency_ms_p{percentile:g}"


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
    def throughput_ci(self) -> tuple[float, float]:
        """95% interval of the median block throughput (`quantile_ci`)."""
        return quantile_ci(self.block_throughputs, 0.5)

    @property
    def drift(self) -> float:
        """How block throughput moved while timing: the median of the later half of the
        blocks over that of the earlier half, minus 1 (0 with under 6 blocks: too few
        halves to tell a trend from noise)."""
        values = self.block_throughputs
        half = len(values) // 2
        if half < 3:
            return 0.0
        return statistics.median(values[-half:]) / statistics.median(values[:half]) - 1

    @property
    def noisy(self) -> bool:
        return self.throughput_iqr > NOISY_IQR_RATIO * self.throughput

    def _latencies(self) -> list[float]:
        return sorted(self.iteration_times or [t / self.iters_per_block for t in self.block_times])

    def latency_ms(self, q: float) -> float:
        """Per-batch latency percentile (host input -> output on host), from iterations."""
        return 1e3 * _quantile(self._latencies(), q)

    def latency_ci_ms(self, q: float) -> tuple[float, float]:
        lo, hi = quantile_ci(self._latencies(), q)
        return 1e3 * lo, 1e3 * hi

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

    def summary(self, percentile: float = 95) -> dict[str, float]:
        """The figures a trial stores: median throughput with its IQR and 95% interval,
        latency p50, p95 and `percentile` (the study's), with the latter's interval."""
        lo, hi = self.throughput_ci
        out = {
            "throughput_samples_per_s": self.throughput,
            "throughput_iqr": self.throughput_iqr,
            "throughput_ci_lo": lo,
            "throughput_ci_hi": hi,
            "noisy": float(self.noisy),
            "iterations": float(len(self.iteration_times) or len(self.block_times)),
        }
        for p in sorted({50.0, 95.0, float(percentile)}):
            out[percentile_key(p)] = self.latency_ms(p / 100)
        key = percentile_key(percentile)
        out[f"{key}_ci_lo"], out[f"{key}_ci_hi"] = self.latency_ci_ms(percentile / 100)
        return {k: stored_figure(v) for k, v in out.items()}


def stored_figure(value: float, digits: int = 6) -> float:
    """`value` to `digits` significant digits: timings on these machines move by percents,
    so further digits are noise, and they made each trial's stored metrics unreadably long
    (over 600 characters in optuna-dashboard)."""
    return float(f"{value:.{digits}g}")


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _iqr(values: list[float]) -> float:
    s = sorted(values)
    return _quantile(s, 0.75) - _quantile(s, 0.25)
