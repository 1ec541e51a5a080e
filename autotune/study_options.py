"""What a study is asked to do: its options, each declared once, and the space they define
(the measurement protocol they give each trial is `autotune.jobs.trial_job`).

An option's field name is its flag's (`stop_slower` is `--stop-slower`; a switch on by
default, `progress`, is `--no-progress`), and its declaration holds its default (from
`autotune.defaults`) and its help: the CLI's parsers are generated from them
(`autotune.cli.common.add_options`). This module imports nothing heavy at import time, so
`autotune --help` stays fast; `build_space` imports the backends and studies when called.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import defaults
from autotune.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from autotune.records import StudyRecord
    from search_spaces import SearchSpace
    from studies import Weight

# Groups of options: stored with the study (every host running its trials uses them), which
# study (every command reading one takes them), and this host's own settings.
STUDY, WHICH, HOST = "study", "which", "host"

# Stored under these names before the names became the flags'; read by `from_study`.
RENAMED = {
    "stop_ratio": "stop_slower",
    "timeout_s": "timeout_per_trial",
    "memory_limit_bytes": "memory_limit",
    "sensitivity_starting_points": "starting_points",
}


def parse_size(text: str) -> int:
    """'1.5G', '800M', '2GiB', '4096' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 800M or 2G)")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def comma_list(text: str) -> tuple[str, ...] | None:
    """'0,1' -> ('0', '1'); nothing listed: None."""
    return tuple(item for item in text.split(",") if item) or None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autotune"


def option(
    default: Any = MISSING,
    *,
    help: str | None = None,
    group: str = STUDY,
    identity: bool = False,
    factory: Any = MISSING,
    **cli: Any,
) -> Any:
    """A StudyOptions field. With `help` it is a flag; `cli` holds more of its
    `add_argument` keywords (metavar, choices, type, where not its default's type) and
    `flags` (its spellings, when not only `--name`) and `hidden` (old spellings, still
    parsed, not shown). `identity`: every host must share it (it defines what a trial
    measures), and a study is resumed only with the same value."""
    meta = {"help": help, "group": group, "identity": identity, "cli": cli}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StudyOptions:
    # In the order `autotune study --help` lists them.
    model: str = option(
        help="study to tune: a shipped one (e.g. mnist), FILE.py:ATTR or pkg.module:ATTR, "
        "hf:DIR_OR_HUB_ID, torchvision:NAME, timm:NAME, or pkg.module:ForgeLoader[@variant]",
        identity=True,
    )
    # A source's options (`studies.sources`): folded into `model` as its query, so that
    # every process resolving the model (trial processes, verify) builds the same study.
    seq_len: int | None = option(
        None,
        help=f"tokens per row of an hf: text model's generated inputs (default {defaults.SEQ_LEN})",
        type=int,
        metavar="N",
    )
    eval_data: str | None = option(
        None,
        help="eval set of an hf:, torchvision:, timm: or loader model: a torch.save "
        "file of (inputs, labels); without labels the metric is fidelity against fp32",
        metavar="FILE",
    )
    weights: str | None = option(
        None,
        help="state dict of a torchvision: or timm: model (else random weights, "
        "scored by fidelity against fp32)",
        metavar="FILE",
    )
    metric: str | None = option(
        None,
        help="score outputs by this built-in metric instead of the study's own: top1 (vs the "
        "labels), agreement, pcc or cosine (vs fp32); --max-metric-drop bounds it",
        choices=defaults.METRICS,
    )
    backend: str = option(
        defaults.BACKEND,
        help=f"device family: cpu, cuda, tt (default {defaults.BACKEND})",
        identity=True,
    )
    confirm: int = option(
        defaults.CONFIRM,
        help="re-measure the K best feasible trials, then the top one while it is not "
        "re-measured (at most 2K in all); the pick pools all measurements (default "
        f"{defaults.CONFIRM}; 0: no re-measurement)",
        metavar="K",
    )
    starting_points: bool = option(
        True,
        help="skip the sensitivity pass and its dtype maps queued as starting points (done "
        "only where the space offers block-float dtypes); the model's recipe is still queued",
        # The flag's first name, from before "seed" meant only the sampler's RNG seed.
        hidden=("--no-seed",),
    )
    trials: int = option(
        defaults.TRIALS, help="total finished trials the study should have (rerun to resume)"
    )
    max_accuracy_drop: float = option(
        defaults.MAX_ACCURACY_DROP,
        help="feasible = top-1 within this many points of fp32 "
        f"(default {defaults.MAX_ACCURACY_DROP:g})",
        metavar="POINTS",
        identity=True,
    )
    max_metric_drop: float | None = option(
        None,
        help="feasible = the study's metric within this much of fp32's, in its unit (default: "
        "--max-accuracy-drop for top-1, else the metric's own tolerance, e.g. 0.01 of PCC)",
        metavar="DROP",
        type=float,
        identity=True,
    )
    max_latency_ms: float | None = option(
        None,
        help="feasible = per-batch latency (input to device, model, output to host) at "
        "--latency-percentile within this many ms",
        metavar="MS",
        type=float,
        identity=True,
    )
    latency_percentile: float = option(
        defaults.LATENCY_PERCENTILE,
        help="the latency percentile --max-latency-ms and --objective latency use (default "
        f"{defaults.LATENCY_PERCENTILE:g}); timing goes on until 10 iterations lie beyond it",
        metavar="P",
        identity=True,
    )
    objective: str = option(
        defaults.OBJECTIVE,
        help="maximize throughput (default) or minimize the latency percentile (online "
        "serving), under the constraints",
        choices=("throughput", "latency"),
        identity=True,
    )
    min_agreement: float | None = option(
        None,
        help="also require this share of top-1 predictions equal to fp32's (e.g. 99.9)",
        metavar="PERCENT",
        type=float,
        identity=True,
    )
    # The narrowing spec, as read from the space file (`--space FILE`: the CLI reads it).
    space: dict[str, Any] | None = option(
        None,
        help="TOML/YAML file narrowing the space; or an --emulate tt study's JSON export: "
        "the math fidelities it did not rule out",
        metavar="FILE",
        type=Path,
    )
    max_batch_size: int | None = option(
        None, help="largest batch size searched (power of 2)", type=int
    )
    measure_seconds: float = option(
        defaults.MEASURE_SECONDS,
        help=f"timed seconds per trial after warmup (default {defaults.MEASURE_SECONDS:g})",
        identity=True,
    )
    warmup_iters: int = option(defaults.WARMUP_ITERS)  # no flag
    timeout_per_trial: float | None = option(
        defaults.TIMEOUT_PER_TRIAL,
        help="kill a trial's process group after this long "
        f"(default {defaults.TIMEOUT_PER_TRIAL:g})",
        metavar="SECONDS",
    )
    memory_limit: int | None = option(  # bytes
        None,
        help="cap each trial process's memory (RLIMIT_DATA), e.g. 2G; over it is OOM (pruned)",
        metavar="SIZE",
        type=parse_size,
    )
    seed: int | None = option(None, help="sampler seed, for repeatable searches", type=int)
    sampler: str = option(  # autotune's strategy is `autotune.sampler`
        defaults.SAMPLER,
        help="search strategy: autotune's (climbs batch size and uniform precision, then "
        "TPE; default), plain TPE, or random",
        choices=defaults.SAMPLERS,
    )
    stop_slower: float = option(
        defaults.STOP_SLOWER,
        help="stop a trial after warm-up when it is X times slower than the best feasible "
        "one so far (pruned as slow: not timed, not evaluated; default "
        f"{defaults.STOP_SLOWER:g}; 0 never stops)",
        metavar="X",
    )
    eval_limit: int | None = option(
        None, help="evaluate accuracy on the first N samples only", type=int, identity=True
    )
    storage: str = option(
        defaults.STORAGE,
        help=f"SQLAlchemy URL of the study storage (default {defaults.STORAGE})",
        group=WHICH,
    )
    study_name: str | None = option(  # default: `name`
        None, help="study name", group=WHICH, flags=("--study", "--study-name")
    )
    trial_python: str | None = option(
        None,
        help="interpreter that runs trials (default: this one)",
        group=HOST,
        # The flag's name before "worker" came to mean only the `autotune worker` command.
        hidden=("--worker-python",),
    )
    jobs: int = option(
        defaults.JOBS,
        help=f"trials run at once on this host (default {defaults.JOBS})",
        group=HOST,
    )
    devices: tuple[str, ...] | None = option(
        None,
        help="comma-separated device ids: one trial per device at once",
        group=HOST,
        metavar="IDS",
        type=comma_list,
    )
    heartbeat: int = option(
        defaults.HEARTBEAT,
        help=f"heartbeat interval; a trial silent for {defaults.SILENT_BEATS} intervals is "
        "re-queued",
        group=HOST,
        metavar="SECONDS",
    )
    cache_dir: Path = option(
        help=f"compile and reference cache (default {defaults.CACHE_DIR_SHOWN})",
        group=HOST,
        factory=default_cache_dir,
        type=Path,
    )
    progress: bool = option(True, help="no progress bar", group=HOST)
    storage_retry_seconds: float = option(
        defaults.STORAGE_RETRY_SECONDS,
        help="retry a storage read or write that finds the database unreachable or locked "
        f"for this long before giving up (default {defaults.STORAGE_RETRY_SECONDS:g}; a "
        "measurement not stored by then is kept in a file the next run stores)",
        group=HOST,
        metavar="SECONDS",
    )

    def __post_init__(self) -> None:
        from studies import sources

        check_ranges(self)

        files = {}
        for key in ("eval_data", "weights"):
            value = getattr(self, key)
            if value is not None:
                path = Path(value).expanduser().resolve()
                if not path.is_file():
                    raise UsageError(f"--{key.replace('_', '-')}: no file {value}")
                files[key] = str(path)
        folded = sources.with_options(self.model, seq_len=self.seq_len, metric=self.metric, **files)
        object.__setattr__(self, "model", folded)

    @property
    def name(self) -> str:
        """--study-name, else MODEL-BACKEND (a model file by its name: ``my_model.py:STUDY``;
        a source's options left out)."""
        from studies.sources import display_name

        shown = display_name(self.model)
        source, colon, attr = shown.rpartition(":")
        model = f"{Path(source).name}:{attr}" if colon and source.endswith(".py") else shown
        return self.study_name or f"{model}-{self.backend}"

    def shared(self) -> dict[str, Any]:
        """What the study stores: the options every host running its trials uses."""
        return {k: v for k, v in asdict(self).items() if group(k) == STUDY}

    @classmethod
    def from_study(cls, record: StudyRecord, **host: Any) -> StudyOptions:
        """Options of an existing study (for `autotune worker`), plus this host's settings."""
        known = {f.name for f in fields(cls)}
        shared = {k: v for k, v in stored_options(record.options).items() if k in known}
        return cls(**shared, **host)


# (field, lowest allowed, whether the lowest itself is allowed); None passes.
_RANGES = (
    ("measure_seconds", 0.0, False),
    ("timeout_per_trial", 0.0, False),
    ("max_accuracy_drop", 0.0, True),
    ("max_metric_drop", 0.0, True),
    ("min_agreement", 0.0, True),
    ("max_latency_ms", 0.0, False),
    ("confirm", 0, True),
    ("eval_limit", 1, True),
    ("max_batch_size", 1, True),
    ("seed", 0, True),
    ("storage_retry_seconds", 0.0, True),
)
MIN_MEMORY_LIMIT = 64 * 2**20  # a trial process with torch cannot even start in less
MAX_SEED = 2**32 - 1  # numpy's, which Optuna's samplers seed


def check_ranges(opts: StudyOptions) -> None:
    """Refuse values no study can run with (one line, exit 2), before anything is created:
    NaN, infinities, zero or negative times and sizes. Stored options of a study read back
    (`from_study`) go through the same check."""
    import math

    from autotune.errors import UsageError

    for name, low, inclusive in _RANGES:
        value = getattr(opts, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{flag} must be a number, not {value!r}")
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            bound = f"at least {low:g}" if inclusive else f"above {low:g}"
            raise UsageError(f"{flag} must be a finite number {bound}, not {value:g}")
    from autotune.pruning import check_stop_ratio

    check_stop_ratio(opts.stop_slower)
    p = opts.latency_percentile
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p < 100:
        raise UsageError(f"--latency-percentile must be between 0 and 100, not {p}")
    if opts.min_agreement is not None and opts.min_agreement > 100:
        raise UsageError(f"--min-agreement is a percentage, not {opts.min_agreement:g}")
    if opts.seed is not None and opts.seed > MAX_SEED:
        raise UsageError(f"--seed must be at most {MAX_SEED}, not {opts.seed}")
    if opts.memory_limit is not None and opts.memory_limit < MIN_MEMORY_LIMIT:
        raise UsageError(
            f"--memory-limit must be at least 64M (a trial process needs that to start), "
            f"not {opts.memory_limit} bytes"
        )


def declared(name: str | None = None) -> list[Field]:
    """The declarations of StudyOptions' fields (all, or the one named), in order."""
    return [f for f in fields(StudyOptions) if name in (None, f.name)]


def group(name: str) -> str:
    return declared(name)[0].metadata["group"]


IDENTITY = tuple(f.name for f in declared() if f.metadata["identity"])


def stored_options(options: dict[str, Any]) -> dict[str, Any]:
    """A study's stored options under today's names (older studies stored some under
    RENAMED's keys)."""
    return {RENAMED.get(k, k): v for k, v in options.items()}


def build_space(opts: StudyOptions, weights: Sequence[Weight] | None = None) -> SearchSpace:
    """The space `opts` asks for; `weights`: the model's lowerable weights where a describe
    job found them (`autotune.jobs.describe_model`), else the study's own list."""
    from autotune.backends import get_backend
    from search_spaces import default_space
    from studies import get_study

    space = default_space(
        get_study(opts.model),
        get_backend(opts.backend),
        opts.max_batch_size,
        model=opts.model,
        weights=weights,
    )
    return space.narrowed(opts.space) if opts.space else space


def metric_limit(opts: StudyOptions, metric: dict[str, Any]) -> float:
    """The drop of the study's metric a feasible trial may have, in the metric's unit:
    --max-metric-drop, else --max-accuracy-drop for top-1, else the metric's tolerance."""
    from studies.metrics import TOP1

    if opts.max_metric_drop is not None:
        return opts.max_metric_drop
    if metric.get("name") == TOP1.name:
        return opts.max_accuracy_drop
    return float(metric.get("tolerance", opts.max_accuracy_drop))
