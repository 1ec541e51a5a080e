"""The values that cross the tuner/trial-process boundary: small, frozen, JSON in and out.

A `TrialConfig` is what is tuned (hashable: equal configs are measured once). A `TrialJob`
is a config plus how to measure it. A `TrialResult` always comes back, failures included.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from autotune import defaults
from autotune.files import write_atomic

SCHEMA_VERSION = 1


class Status(StrEnum):
    OK = "ok"
    OOM = "oom"
    COMPILE_ERROR = "compile_error"
    TRACE_ERROR = "trace_region"  # the trace did not fit its reserved region
    TIMEOUT = "timeout"
    CRASH = "crash"
    NAN = "nan"
    METRIC_ERROR = "metric_error"  # the study's metric failed or returned no finite number
    SLOW = "slow"  # stopped after warm-up: far slower than the best trial so far
    # Not counted in the budget (autotune.ledger.NOT_COUNTED); the first two are queued again.
    INTERRUPTED = "interrupted"  # Ctrl-C
    LOST = "lost"  # its tuner died or stopped beating (autotune.liveness)
    SURPLUS = "surplus"  # asked when other hosts had taken the last of the budget; not run


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space. `weight_dtypes` is a sorted tuple of (glob, dtype)."""

    model: str
    backend: str
    batch_size: int
    optimization_level: int = 0
    trace: bool = False
    activation_dtype: str = "fp32"
    weight_dtypes: tuple[tuple[str, str], ...] = ()
    knobs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # Normalise so that equal configs compare and hash equal whatever the input order.
        object.__setattr__(self, "weight_dtypes", tuple(sorted(map(tuple, self.weight_dtypes))))
        object.__setattr__(self, "knobs", tuple(sorted(map(tuple, self.knobs))))

    @property
    def weight_dtype_map(self) -> dict[str, str]:
        return dict(self.weight_dtypes)

    @property
    def knob_map(self) -> dict[str, Any]:
        return dict(self.knobs)

    def with_batch_size(self, batch_size: int) -> TrialConfig:
        return replace(self, batch_size=batch_size)

    def key(self) -> str:
        """A canonical string: equal for configs that would measure the same thing."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weight_dtypes"] = self.weight_dtype_map
        d["knobs"] = self.knob_map
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        d = dict(d)
        d["weight_dtypes"] = tuple(d.get("weight_dtypes", {}).items())
        d["knobs"] = tuple(d.get("knobs", {}).items())
        return cls(**d)


class JobMode(StrEnum):
    """What a trial process is asked to do."""

    TRIAL = "trial"  # build, compile, time and evaluate one config
    REFERENCE = "reference"  # fp32 eager outputs: the accuracy baseline
    SENSITIVITY = "sensitivity"  # accuracy with one weight at a time lowered
    DESCRIBE = "describe"  # one fp32 pass: the model's weights, outputs and metric


@dataclass(frozen=True)
class TrialJob:
    """A config plus the measurement protocol; written as JSON for the trial process."""

    config: TrialConfig
    mode: JobMode = JobMode.TRIAL
    measure_seconds: float = defaults.MEASURE_SECONDS
    warmup_iters: int = defaults.WARMUP_ITERS
    warmup_seconds: float = defaults.MEASURE_SECONDS * defaults.WARMUP_SHARE
    min_blocks: int = defaults.MIN_BLOCKS
    # Stop after warm-up, neither timed nor evaluated, below this many samples/s
    # (`autotune.pruning.stop_below`).
    stop_below: float | None = None
    # The latency percentile the study constrains or minimizes, its budget (a trial clearly
    # over it stops after warm-up) and the timed iterations that percentile needs
    # (`autotune.measure.min_iterations`; 0: the throughput rule alone).
    latency_percentile: float = defaults.LATENCY_PERCENTILE
    latency_budget_ms: float | None = None
    min_iterations: int = 0
    reference_path: str | None = None
    reference_metric: float | None = None
    eval_limit: int | None = None
    memory_limit_bytes: int | None = None
    cache_dir: str | None = None
    refresh_cache: bool = False  # reference/sensitivity: recompute even when cached

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        d["schema"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialJob:
        d = dict(d)
        _check_schema(d.pop("schema", None))
        d["config"] = TrialConfig.from_dict(d["config"])
        d["mode"] = JobMode(d["mode"])  # always written; an unknown mode is an error
        return cls(**d)


@dataclass
class TrialResult:
    """What a trial produced. `metrics` holds throughput/latency/accuracy figures."""

    status: Status
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    block_times: list[float] = field(default_factory=list)
    iters_per_block: int = 0
    environment: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""
    table: list[dict[str, Any]] = field(default_factory=list)  # per-item rows (sensitivity)
    artifacts: dict[str, str] = field(default_factory=dict)  # files written or reused, by role

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        d["schema"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        d = dict(d)
        _check_schema(d.pop("schema", None))
        d["status"] = Status(d["status"])
        return cls(**d)

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=1))  # never read half-written

    @classmethod
    def read(cls, path: Path) -> TrialResult:
        return cls.from_dict(json.loads(path.read_text()))


def _check_schema(version: object) -> None:
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema version {version!r} is not {SCHEMA_VERSION}")
