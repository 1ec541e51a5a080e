"""A trial's result as Optuna sees it, and as the trial's record stores it.

OOM and slow trials are PRUNED (far enough to know they lose), a measured trial (ok, or
NaN outputs) is COMPLETE with its two objectives and its constraints, anything else is
FAIL. The record (`autotune.records.TrialRecord`) gets the status, message, finite metrics,
timings and raw block times; a trial whose outcome is copied from an earlier one records
where from (`tell_copy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.objective import Objective
from autotune.records import (
    TrialRecord,
    named_constraints,
    set_block_times,
    set_constraints,
    write_trial,
)
from autotune.wire import Status, TrialResult

if TYPE_CHECKING:
    import optuna


def state_of(status: Status) -> optuna.trial.TrialState:
    import optuna

    if status in (Status.OOM, Status.SLOW):
        return optuna.trial.TrialState.PRUNED
    if status in (Status.OK, Status.NAN):
        return optuna.trial.TrialState.COMPLETE
    return optuna.trial.TrialState.FAIL


@dataclass(frozen=True)
class Scoring:
    """How a measured trial is judged: the study's constraints (the drop of its metric
    allowed, in the metric's unit), and what a trial with NaN outputs loses."""

    max_metric_drop: float
    min_agreement: float | None = None
    reference_metric: float | None = None
    metric: dict[str, Any] = field(default_factory=dict)  # `StudyRecord.metric`
    objective: Objective = field(default_factory=Objective)  # and the latency budget

    def nan_drop(self) -> float:
        """The drop of garbage outputs: a points metric (top-1, agreement) loses all of
        fp32's value, as if no prediction were right; any other metric, without bound."""
        if self.metric.get("unit") == "points" and self.metric.get("higher_is_better", True):
            return self.reference_metric if self.reference_metric is not None else 100.0
        return math.inf

    def constraints(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each constraint's value (<= 0 is satisfied)."""
        out = {"metric_drop": metrics["metric_drop"] - self.max_metric_drop}
        if self.min_agreement is not None:
            # Top-1 accuracy can hide flipped predictions that cancel out; agreement cannot.
            agreement = 100.0 * (metrics.get("agreement") or 0.0)
            out["agreement"] = self.min_agreement - agreement
        latency = self.objective.latency_excess(metrics)
        if latency is not None:
            out["latency"] = latency
        return out

    def values(self, metrics: dict[str, Any]) -> list[float]:
        """The trial's two Optuna objectives: the study's objective, and the metric drop."""
        value = self.objective.value(metrics)
        if value is None:  # e.g. no latency figure: the worst value
            value = 0.0 if self.objective.direction == "maximize" else math.inf
        return [value, metrics["metric_drop"]]


def tell(study: optuna.Study, trial: optuna.Trial, result: TrialResult, scoring: Scoring) -> None:
    """Store the result on the trial, then finish it in its state (`state_of`)."""
    import optuna

    if state_of(result.status) is not optuna.trial.TrialState.COMPLETE:
        tell_unmeasured(study, trial, result)
        return
    record_result(trial, result)
    metrics = result.metrics
    if result.status is Status.NAN:
        # Garbage outputs: measured, never feasible (`Scoring.nan_drop`).
        metrics["metric_drop"] = scoring.nan_drop()
        write_trial(trial, metrics=finite(metrics))
    set_constraints(trial, scoring.constraints(metrics))
    study.tell(trial, scoring.values(metrics))


def tell_unmeasured(study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
    """Store a result without objectives (one that is PRUNED or FAIL, see `state_of`),
    then finish the trial."""
    record_result(trial, result)
    study.tell(trial, state=state_of(result.status))


def tell_copy(study: optuna.Study, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> None:
    """Record what an earlier trial already showed (`autotune.pruning.earlier_outcome`),
    without starting a trial process."""
    before = TrialRecord.of(earlier)
    origin = before.duplicate_of if before.duplicate_of is not None else earlier.number
    copied = {"status": before.status, "metrics": before.metrics}
    copied = {k: v for k, v in copied.items() if v is not None}
    same = before.config_key == TrialRecord.of(trial).config_key
    oom_batch = (before.config or {}).get("batch_size")
    write_trial(
        trial,
        **copied,
        duplicate_of=origin,
        message=f"same config as trial {origin}; not measured again"
        if same
        else f"batch {oom_batch} ran out of memory in trial {origin}; not run",
    )
    if earlier.state.name == "COMPLETE":
        set_constraints(trial, named_constraints(earlier))
    study.tell(trial, earlier.values, state=earlier.state)


def record_result(trial: optuna.Trial, result: TrialResult) -> None:
    write_trial(
        trial,
        status=str(result.status),
        message=result.message,
        metrics=finite(result.metrics),
        timings=result.timings,
        environment=result.environment or None,
        stderr_tail=result.stderr_tail or None,
    )
    if result.block_times:  # raw samples out of the user attrs (see autotune.records)
        set_block_times(trial, result.block_times, result.iters_per_block)


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON user attrs cannot hold NaN/inf portably; keep the keys, store None.
    return {
        k: (v if isinstance(v, int | float) and math.isfinite(v) else None)
        for k, v in metrics.items()
    }
