"""How a trial is laid out in the study storage, so that Optuna, optuna-dashboard and our
own readers (show, plot, export, report, verify) all see what they need.

- Objectives are named (`METRIC_NAMES`, the study's ``study:metric_names`` system attr).
- Constraints are stored twice. Optuna 5 keeps each under its own name
  (``constraints:<name>`` system attrs, `trial.set_constraint`); optuna-dashboard 0.21 reads
  only the unnamed list Optuna wrote before 5 (system attr ``constraints``, see its
  ``_serializer.serialize_frozen_trial``), and shows every trial as feasible without it.
  Optuna merges both forms into ``trial.constraints`` (list entries under the keys "0",
  "1", ...), so readers that want the names use `named_constraints`. The values are the
  same, so feasibility is the same whichever form a reader uses.
- Raw block times (hundreds of floats per trial) live in a prefixed trial system attr:
  the dashboard lists every user attr in its trial table, and does not read system attrs.
  The user attrs keep a compact summary (`blocks`, `iters_per_block`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

METRIC_NAMES = ["throughput [samples/s]", "top-1 drop [points vs fp32]"]
BLOCK_TIMES_ATTR = "autotune:block_times"  # trial system attr: seconds per timed block
LEGACY_CONSTRAINTS_ATTR = "constraints"  # the unnamed list optuna-dashboard reads
_NAMED_PREFIX = "constraints:"


def set_constraints(trial: optuna.Trial, values: dict[str, float]) -> None:
    """Each constraint by name (Optuna 5), the list (optuna-dashboard), and a readable user
    attr saying which constraint held (<= 0 is satisfied)."""
    for name, value in values.items():
        trial.set_constraint(name, value)
    floats = [float(v) for v in values.values()]
    trial.storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS_ATTR, floats)
    trial.set_user_attr("constraints", {name: float(v) for name, v in values.items()})
    trial.set_user_attr("feasible", all(v <= 0 for v in floats))


def named_constraints(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The trial's constraints by name; the unnamed list where a trial has only that (a
    study written by another tool)."""
    attrs = trial.system_attrs
    named = {k[len(_NAMED_PREFIX) :]: v for k, v in attrs.items() if k.startswith(_NAMED_PREFIX)}
    if named:
        return named
    return {str(i): v for i, v in enumerate(attrs.get(LEGACY_CONSTRAINTS_ATTR) or [])}


def set_block_times(trial: optuna.Trial, block_times: list[float], iters_per_block: int) -> None:
    trial.storage.set_trial_system_attr(trial._trial_id, BLOCK_TIMES_ATTR, list(block_times))
    trial.set_user_attr("blocks", len(block_times))
    trial.set_user_attr("iters_per_block", iters_per_block)


def block_times(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Seconds per timed block; studies written before the move kept them in user attrs."""
    stored: Any = trial.system_attrs.get(BLOCK_TIMES_ATTR)
    if stored is None:
        stored = trial.user_attrs.get("block_times", [])
    return [float(t) for t in stored]
