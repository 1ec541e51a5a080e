"""Plain data about a finished study: trial rows, the Pareto front, the exported pick.

Everything here works on stored trials only, so `show`, `plot`, `export` and the tuner's
summary agree by construction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotune.errors import NothingFoundError
from autotune.measure import Measurement
from autotune.records import (
    TrialRecord,
    block_times,
    named_constraints,
    retried_numbers,
    study_record,
)
from autotune.wire import Status

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # Optuna's: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    status: str  # ours: ok, oom, timeout, crash, ...
    message: str
    config: dict[str, Any]
    metrics: dict[str, float]
    feasible: bool
    duplicate_of: int | None = None
    first: Measurement | None = None  # the trial's own timed blocks, where stored
    remeasurements: tuple[Measurement, ...] = ()  # after the study (winner selection)
    remeasure_attempts: int = 0  # failed re-measurements included

    @property
    def throughput(self) -> float | None:
        """The trial's own measurement (what the sampler saw; plotted)."""
        return self.metrics.get("throughput_samples_per_s")

    @property
    def confirmed(self) -> bool:
        """Re-measured at least once after the study."""
        return bool(self.remeasurements)

    @property
    def confirmations(self) -> tuple[float, ...]:
        """Each re-measurement's own median throughput."""
        return tuple(m.throughput for m in self.remeasurements)

    @property
    def confirmed_throughput(self) -> float | None:
        """Median block throughput over the pooled blocks of all measurements of the trial's
        config (its own and the re-measurements): the first measurement of the best of many
        noisy trials is biased upward, so the pick uses this."""
        if self.throughput is None or not self.remeasurements:
            return self.throughput
        batch = self.remeasurements[0].batch_size
        # Trials stored without their blocks count as one block at their median.
        first = self.first or Measurement((batch / self.throughput,), 1, batch)
        return Measurement.merge([first, *self.remeasurements]).throughput

    @property
    def metric_drop(self) -> float | None:
        """How much worse than fp32 the study's metric is, in its unit (NaN outputs: inf
        where the metric has no bound, stored as None)."""
        drop = self.metrics.get("metric_drop")
        return float("inf") if drop is None and self.status == "nan" else drop

    @property
    def measured(self) -> bool:
        return self.state == "COMPLETE" and self.throughput is not None


def remeasurement_entry(block_times: list[float], iters_per_block: int) -> dict[str, Any]:
    """One re-measurement as stored in the study metadata (`confirmed`): its raw block
    times at 6 significant digits (1e-6 relative, far below timing noise)."""
    return {
        "iters_per_block": iters_per_block,
        "block_times": [float(f"{t:.6g}") for t in block_times],
    }


def _remeasurements(entries: list[dict[str, Any]], batch_size: int) -> tuple[Measurement, ...]:
    out = []
    for e in entries:
        if e.get("block_times"):  # failed attempts have none
            out.append(Measurement(tuple(e["block_times"]), e["iters_per_block"], batch_size))
    return tuple(out)


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    confirmed = study_record(study).confirmed
    rows = []
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        record = TrialRecord.of(t, retried)
        constraints = list(named_constraints(t).values())
        config = record.config or {}
        batch = config.get("batch_size", 1)
        entries = confirmed.get(str(t.number), [])
        blocks = block_times(t)
        first = Measurement(tuple(blocks), record.iters_per_block, batch) if blocks else None
        if record.status is not None:
            status = record.status
        else:  # failed before its tuner wrote anything: lost with it
            status = Status.LOST.value if t.state.name == "FAIL" else t.state.name.lower()
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name,
                status=status,
                message=record.message or "",
                config=config,
                metrics=record.metrics or {},
                feasible=t.state.name == "COMPLETE"
                and bool(constraints)
                and all(c <= 0 for c in constraints),
                duplicate_of=record.duplicate_of,
                first=first,
                remeasurements=_remeasurements(entries, batch),
                remeasure_attempts=len(entries),
            )
        )
    return rows


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Non-dominated measured trials (max throughput, min accuracy drop), by throughput.

    Duplicates (a config measured once, reported again) are left out.
    """
    points = [r for r in rows if r.measured and r.duplicate_of is None]
    front = [r for r in points if not any(_dominates(o, r) for o in points if o is not r)]
    return sorted(front, key=lambda r: -r.throughput)


def _dominates(a: TrialRow, b: TrialRow) -> bool:
    return (
        a.throughput >= b.throughput
        and a.metric_drop <= b.metric_drop
        and (a.throughput > b.throughput or a.metric_drop < b.metric_drop)
    )


def _feasible(rows: list[TrialRow]) -> list[TrialRow]:
    return [r for r in rows if r.feasible and r.measured and r.duplicate_of is None]


def _rank(r: TrialRow) -> tuple[float, float, int]:
    return (-r.confirmed_throughput, r.metric_drop, r.number)


def best_feasible(rows: list[TrialRow]) -> TrialRow | None:
    """Highest confirmed throughput that meets the constraint; ties go to the smaller
    accuracy drop, then to the earlier trial.

    Once any feasible trial was re-measured, only re-measured trials compete: the pick is
    never a single, upward-biased first measurement (the tuner re-measures until the top
    is confirmed, see `confirmation_candidates`).
    """
    feasible = _feasible(rows)
    pool = [r for r in feasible if r.confirmed] or feasible
    return min(pool, key=_rank) if pool else None


def winner(study: optuna.Study) -> TrialRow:
    """The trial `autotune export` exports: `best_feasible` over the stored trials.
    NothingFoundError, naming the constraint, when no trial meets it."""
    row = best_feasible(trial_rows(study))
    if row is None:
        meta = study_record(study)
        raise NothingFoundError(
            f"study {study.study_name!r} has no feasible trial "
            f"(none measured with {meta.feasible_text}"
            + (f" and {meta.min_agreement:g}% agreement" if meta.min_agreement else "")
            + ")"
        )
    return row


def confirmation_candidates(rows: list[TrialRow], k: int) -> list[TrialRow]:
    """Feasible trials still to re-measure, next first; empty when the pick is settled.

    First the k highest first measurements; then, while the top by confirmed throughput
    (unconfirmed trials count with their one measurement) is not re-measured, that one.
    A trial whose re-measurement failed is not tried again and loses to re-measured ones.
    """
    if k < 1:
        return []
    feasible = _feasible(rows)
    by_first = sorted(feasible, key=lambda r: (-r.throughput, r.metric_drop, r.number))
    todo = [r for r in by_first[:k] if not r.remeasure_attempts]
    if todo:
        return todo
    contenders = [r for r in feasible if r.confirmed or not r.remeasure_attempts]
    top = min(contenders, key=_rank) if contenders else None
    return [top] if top is not None and not top.remeasure_attempts else []


def failure_counts(rows: list[TrialRow]) -> dict[str, int]:
    return dict(Counter(r.status for r in rows if r.state in ("PRUNED", "FAIL")))


def reference_recipe_row(study: optuna.Study, rows: list[TrialRow]) -> TrialRow | None:
    """The measured trial of the backend's reference recipe (the reference the study must beat,
    see `Backend.reference_recipe`), or None where the study has none or it was not measured."""
    recipe = study_record(study).reference_recipe
    if not recipe:
        return None
    key = _config_key(recipe)
    found = [r for r in rows if r.measured and r.config and _config_key(r.config) == key]
    # The trial that measured it, not a later duplicate that copied its figures.
    return min(found, key=lambda r: (r.duplicate_of is not None, r.number), default=None)


def _config_key(config: dict[str, Any]) -> str:
    from autotune.wire import TrialConfig

    return TrialConfig.from_dict(config).key()
