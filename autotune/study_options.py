"""What a study is asked to do: its options and the space they define (the measurement
protocol they give each trial is `autotune.jobs.trial_job`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import defaults
from autotune.backends import get_backend
from autotune.storage import DEFAULT_STORAGE
from search_spaces import SearchSpace, default_space
from studies import get_study

if TYPE_CHECKING:
    from autotune.records import StudyRecord

# Settings every host must share: they define what a trial measures.
IDENTITY = (
    "model",
    "backend",
    "max_accuracy_drop",
    "min_agreement",
    "eval_limit",
    "measure_seconds",
)


@dataclass(frozen=True)
class StudyOptions:
    # Stored with the study (every host running trials uses them).
    model: str
    backend: str = defaults.BACKEND
    trials: int = defaults.TRIALS
    max_accuracy_drop: float = defaults.MAX_ACCURACY_DROP
    min_agreement: float | None = None  # percent of top-1 predictions equal to fp32's
    space: dict[str, Any] | None = None  # narrowing spec, as read from a space file
    max_batch_size: int | None = None
    measure_seconds: float = defaults.MEASURE_SECONDS
    warmup_iters: int = 3
    timeout_s: float | None = defaults.TIMEOUT_S
    memory_limit_bytes: int | None = None
    eval_limit: int | None = None
    seed: int | None = None
    sampler: str = defaults.SAMPLER  # autotune's strategy (autotune.sampler), "tpe" or "random"
    # A trial slower than the best feasible one so far by this factor after warm-up stops
    # there (pruned as "slow": not timed, not evaluated). 0 measures every trial in full.
    stop_ratio: float = defaults.STOP_RATIO
    sensitivity_starting_points: bool = True  # queue sensitivity-ordered dtype maps first
    # Re-measure this many top trials, then the top until it is re-measured.
    confirm: int = defaults.CONFIRM
    # This host only.
    storage: str = DEFAULT_STORAGE
    study_name: str | None = None
    trial_python: str | None = None
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    jobs: int = defaults.JOBS
    devices: tuple[str, ...] | None = None
    heartbeat_s: int = defaults.HEARTBEAT_S
    progress: bool = True

    @property
    def name(self) -> str:
        return self.study_name or f"{self.model}-{self.backend}"

    def shared(self) -> dict[str, Any]:
        host = {
            "storage",
            "study_name",
            "trial_python",
            "cache_dir",
            "jobs",
            "devices",
            "heartbeat_s",
            "progress",
        }
        return {k: v for k, v in asdict(self).items() if k not in host}

    @classmethod
    def from_study(cls, record: StudyRecord, **host: Any) -> StudyOptions:
        """Options of an existing study (for `autotune worker`), plus this host's settings."""
        known = {f.name for f in fields(cls)}
        shared = {k: v for k, v in record.options.items() if k in known}
        return cls(**shared, **host)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autotune"


def build_space(opts: StudyOptions) -> SearchSpace:
    space = default_space(
        get_study(opts.model), get_backend(opts.backend), opts.max_batch_size, model=opts.model
    )
    return space.narrowed(opts.space) if opts.space else space
