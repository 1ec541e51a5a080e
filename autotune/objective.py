"""What a study optimizes (`--objective`), and its latency budget, in one place: the first
Optuna objective, its direction and name, the figure a trial is ranked by, and the
constraint a budget adds. Plain values, no torch: the tuner, the sampler and every reader
(show, plot, export, verify, report) take them from here.

Throughput is samples/s over the timed blocks, higher is better; latency is the per-batch
latency percentile of the loop users run (input to device, model, output to host) in ms,
lower is better. The sampler compares configs by `score`, which is higher-is-better for
both (batches per second at that percentile, for latency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from autotune import defaults
from autotune.measure import percentile_key

THROUGHPUT_KEY = "throughput_samples_per_s"
OBJECTIVES = ("throughput", "latency")


@dataclass(frozen=True)
class Objective:
    kind: str = defaults.OBJECTIVE  # one of OBJECTIVES
    percentile: float = defaults.LATENCY_PERCENTILE
    max_latency_ms: float | None = None  # the budget (a constraint), if any

    @classmethod
    def of(cls, options: dict[str, Any]) -> Objective:
        """From a study's stored options (older studies have none: throughput, no budget)."""
        return cls(
            options.get("objective") or defaults.OBJECTIVE,
            float(options.get("latency_percentile") or defaults.LATENCY_PERCENTILE),
            options.get("max_latency_ms"),
        )

    @property
    def latency_key(self) -> str:
        """The metric holding the latency percentile, e.g. ``latency_ms_p95``."""
        return percentile_key(self.percentile)

    @property
    def key(self) -> str:
        return THROUGHPUT_KEY if self.kind == "throughput" else self.latency_key

    @property
    def direction(self) -> str:
        return "maximize" if self.kind == "throughput" else "minimize"

    @property
    def name(self) -> str:
        """The first objective's name, as Optuna and optuna-dashboard show it."""
        if self.kind == "throughput":
            return "throughput [samples/s]"
        return f"latency p{self.percentile:g} [ms per batch]"

    @property
    def says(self) -> str:
        """What the pick answers, in a phrase: ``the highest throughput``."""
        if self.kind == "throughput":
            return "the highest throughput"
        return f"the lowest p{self.percentile:g} latency"

    def value(self, metrics: dict[str, Any]) -> float | None:
        """The objective's value in `metrics`, None where it is missing or not finite."""
        v = metrics.get(self.key)
        return float(v) if isinstance(v, int | float) and math.isfinite(v) and v > 0 else None

    def score(self, metrics: dict[str, Any]) -> float | None:
        """Higher is better for either objective: throughput, or batches/s at the percentile."""
        v = self.value(metrics)
        if v is None:
            return None
        return v if self.kind == "throughput" else 1e3 / v

    def latency_excess(self, metrics: dict[str, Any]) -> float | None:
        """The budget constraint's value (ms over the budget; <= 0 is within it), None
        without a budget. A trial with no latency figure is over it."""
        if self.max_latency_ms is None:
            return None
        latency = metrics.get(self.latency_key)
        if not isinstance(latency, int | float) or not math.isfinite(latency):
            return math.inf
        return float(latency) - self.max_latency_ms

    @property
    def budget_text(self) -> str | None:
        """``p95 latency <= 5 ms per batch``, None without a budget."""
        if self.max_latency_ms is None:
            return None
        return f"p{self.percentile:g} latency <= {self.max_latency_ms:g} ms per batch"
