"""How a study and its trials are laid out in the study storage, so that Optuna,
optuna-dashboard and our own readers (show, plot, export, report, verify) all see what they
need. This is the only module that reads or writes Optuna user attributes: everything else
goes through `StudyRecord`, `TrialRecord` and the writers below.

- The study's record (`StudyRecord`) is one user attr, ``autotune``, holding its options
  (each stored once), trial budget, reference and re-measurements, with a schema version.
- A trial's record (`TrialRecord`) is one user attr per field, so the dashboard's trial
  table shows each; fields are written as the trial goes (claim, config, result).

- Objectives are named (`metric_names`, the study's ``study:metric_names`` system attr).
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
- A finished trial is never written to (Optuna's storage contract). A trial another tuner
  failed when its heartbeat went stale is read as lost from the retry queued for it (its
  ``retry_of``), see `TrialRecord.of`.
- Layouts studies were stored in before are upgraded on read by `autotune.records_legacy`,
  the one place that knows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from autotune import records_legacy
from autotune.objective import Objective
from autotune.records_check import CorruptRecordError, check_record
from autotune.wire import Status

if TYPE_CHECKING:
    from collections.abc import Container, Iterable

    import optuna

# 2: each option once, under "options"; 3: the study's metric (1-2: see
# autotune.records_legacy).
SCHEMA_VERSION = 3
STUDY_ATTR = "autotune"  # the study's record, one prefixed study user attr
SENSITIVITY_ATTR = "autotune_sensitivity"  # the sensitivity pass, on study <model>-sensitivity
BLOCK_TIMES_ATTR = "autotune:block_times"  # trial system attr: seconds per timed block
LEGACY_CONSTRAINTS_ATTR = "constraints"  # the unnamed list optuna-dashboard reads
_NAMED_PREFIX = "constraints:"


def set_constraints(trial: optuna.Trial, values: dict[str, float]) -> None:
    """Each constraint by name (Optuna 5), the list (optuna-dashboard), and a readable user
    attr saying which constraint held (<= 0 is satisfied)."""
    for name, value in values.items():
        trial.set_constraint(name, value)
    floats, readable = _constraints_layout(values)
    trial.storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS_ATTR, floats)
    write_trial(trial, **readable)


def _constraints_layout(values: dict[str, float]) -> tuple[list[float], dict[str, Any]]:
    """The unnamed list (the system attr optuna-dashboard reads) and the record's readable
    fields, of constraints `values` by name."""
    floats = [float(v) for v in values.values()]
    readable = {"constraints": {name: float(v) for name, v in values.items()}}
    return floats, readable | {"feasible": all(v <= 0 for v in floats)}


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
    write_trial(trial, blocks=len(block_times), iters_per_block=iters_per_block)


def block_times(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Seconds per timed block."""
    stored: Any = trial.system_attrs.get(BLOCK_TIMES_ATTR)
    if stored is None:
        stored = records_legacy.trial_block_times(trial.user_attrs)
    return [float(t) for t in stored]


# --- the study ------------------------------------------------------------------------------


@dataclass
class StudyRecord:
    """What a study stores about itself. `options` are the shared `StudyOptions` (what every
    host running trials uses) plus ``space_signature``."""

    options: dict[str, Any] = field(default_factory=dict)
    trials_budget: int | None = None
    weight_groups: dict[str, list[str]] = field(default_factory=dict)  # dimension -> weights
    reference_recipe: dict[str, Any] | None = None  # the backend's recipe, queued first (a config)
    # The study's metric (`studies.metrics.Metric.describe()`) and "limit", the drop allowed.
    metric: dict[str, Any] = field(default_factory=dict)
    reference_metric: float | None = None  # the fp32 model's value of the metric
    reference_environment: dict[str, Any] = field(default_factory=dict)
    reference_fingerprint: str | None = None  # set with the two above
    confirmed: dict[str, list[Any]] = field(default_factory=dict)  # trial number -> entries
    # How the pick was decided, once it was: {"after_trials": n, "conclusion": line}; a
    # resumed study with no new trial since does not decide again.
    decided: dict[str, Any] | None = None
    schema: int = SCHEMA_VERSION  # the layout it was read from; always written as the newest

    @property
    def model(self) -> str | None:
        return self.options.get("model")

    @property
    def backend(self) -> str | None:
        return self.options.get("backend")

    @property
    def max_accuracy_drop(self) -> float | None:
        return self.options.get("max_accuracy_drop")

    @property
    def min_agreement(self) -> float | None:
        return self.options.get("min_agreement")

    @property
    def metric_limit(self) -> float | None:
        """The metric drop a feasible trial may have, in the metric's unit."""
        limit = self.metric.get("limit")
        return limit if limit is not None else self.max_accuracy_drop

    @property
    def drop_label(self) -> str:
        """What the second objective is, for plots and the dashboard."""
        return drop_label(self.metric)

    @property
    def objective(self) -> Objective:
        """What the study optimizes, and its latency budget (`autotune.objective`)."""
        return Objective.of(self.options)

    @property
    def feasible_text(self) -> str:
        budget = self.objective.budget_text
        return feasible_text(self.metric, self.metric_limit) + (f", {budget}" if budget else "")

    @property
    def made_by_tuner(self) -> bool:
        """Created by `autotune study` (a study another tool wrote has no space signature)."""
        return "space_signature" in self.options

    def to_attrs(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)} | {"schema": SCHEMA_VERSION}
        for optional in (
            "reference_recipe",
            "reference_metric",
            "reference_fingerprint",
            "decided",
        ):
            if out[optional] is None:
                del out[optional]
        if self.reference_fingerprint is None:
            del out["reference_environment"]
        return out

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StudyRecord:
        """Tolerant of missing keys and of older layouts (`records_legacy.study_attrs`)."""
        if not isinstance(attrs, dict):
            raise CorruptRecordError(f"the study's record is corrupt: a {type(attrs).__name__}")
        attrs = records_legacy.study_attrs(attrs)
        check_record(cls, attrs, "the study's record")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in known and v is not None})


def drop_header(metric: dict[str, Any]) -> str:
    """A table column's header for the drop: ``drop(pt)``, ``drop(RMSE)``, ``drop``."""
    unit = metric.get("unit") or ""
    return f"drop({'pt' if unit == 'points' else unit})" if unit else "drop"


def feasible_text(metric: dict[str, Any], limit: float | None) -> str:
    """``top-1 accuracy drop <= 0.5 points vs fp32``: the constraint, in one phrase."""
    unit = metric.get("unit") or ""
    shown = "?" if limit is None else f"{limit:g}"
    return f"{metric.get('name') or 'metric'} drop <= {shown}{' ' + unit if unit else ''} vs fp32"


def drop_label(metric: dict[str, Any]) -> str:
    """``top-1 accuracy drop [points vs fp32]``, ``RMSE drop [RMSE vs fp32]``, ..."""
    unit = metric.get("unit")
    name = metric.get("name") or "metric"
    return f"{name} drop [{unit + ' ' if unit else ''}vs fp32]"


def metric_names(metric: dict[str, Any], objective: Objective | None = None) -> list[str]:
    """The objectives' names (Optuna's metric names: optuna-dashboard shows them)."""
    return [(objective or Objective()).name, drop_label(metric)]


def read_study(study: optuna.Study) -> StudyRecord | None:
    """The study's record; None for a study autotune never wrote one on."""
    attrs = study.user_attrs.get(STUDY_ATTR)
    return StudyRecord.from_attrs(attrs) if attrs is not None else None


def study_record(study: optuna.Study) -> StudyRecord:
    """The study's record, empty where there is none (readers that show what is there)."""
    return read_study(study) or StudyRecord()


def write_study(study: optuna.Study, record: StudyRecord) -> None:
    study.set_user_attr(STUDY_ATTR, record.to_attrs())


def add_confirmation(study: optuna.Study, number: int, entry: Any) -> None:
    """Append one re-measurement of trial `number` to the stored record (read fresh, so
    each entry is stored at once and none is lost)."""
    record = study_record(study)
    confirmed = dict(record.confirmed)
    confirmed[str(number)] = [*confirmed.get(str(number), []), entry]
    record.confirmed = confirmed
    write_study(study, record)


def set_decided(study: optuna.Study, after_trials: int, conclusion: str) -> None:
    """Record that the pick was decided after `after_trials` trials, and how."""
    record = study_record(study)
    record.decided = {"after_trials": after_trials, "conclusion": conclusion}
    write_study(study, record)


# --- trials ---------------------------------------------------------------------------------

# Why a trial was queued (stored as "seeded", the name studies were written with).
FROM_RECIPE = "reference_recipe"
FROM_SENSITIVITY = "sensitivity"
_STORED_AS = {"starting_point": "seeded"}  # field -> user attr name, where they differ
_FIELD_OF = {v: k for k, v in _STORED_AS.items()}


@dataclass
class TrialRecord:
    """What a trial stores; None where a field was never written."""

    status: str | None = None  # an `autotune.wire.Status` value
    message: str | None = None
    config: dict[str, Any] | None = None  # the config that ran (`TrialConfig.to_dict`)
    config_key: str | None = None  # the sampled config's key
    metrics: dict[str, float | None] | None = None
    timings: dict[str, float] | None = None  # only on trials that spawned a trial process
    environment: dict[str, Any] | None = None
    stderr_tail: str | None = None
    owner: dict[str, Any] | None = None  # the tuner process running it (autotune.host)
    machine: dict[str, Any] | None = None  # what it ran on
    retry_of: int | None = None  # the lost or interrupted trial it replaces
    starting_point: str | None = None  # why it was queued: FROM_RECIPE, FROM_SENSITIVITY
    duplicate_of: int | None = None  # the trial whose outcome it copies
    first_attempt: dict[str, Any] | None = None  # status and message before a backend retry
    constraints: dict[str, float] | None = None  # readable copy (see set_constraints)
    feasible: bool | None = None
    blocks: int | None = None
    iters_per_block: int | None = None

    def to_attrs(self) -> dict[str, Any]:
        return {
            _STORED_AS.get(f.name, f.name): getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        """Tolerant of older layouts (`records_legacy.trial_attrs`)."""
        known = {f.name for f in fields(cls)}
        named = ((_FIELD_OF.get(k, k), v) for k, v in records_legacy.trial_attrs(attrs).items())
        values = {k: v for k, v in named if k in known}
        check_record(cls, values, "a trial's record")
        return cls(**values)

    @classmethod
    def of(
        cls, trial: optuna.trial.FrozenTrial | optuna.Trial, retried: Container[int] = ()
    ) -> TrialRecord:
        """The trial's record; with `retried` (`retried_numbers` of the study's trials) a
        trial failed under its tuner reads as lost (see `_lost`). Pass it where the status
        or message matters."""
        record = cls.from_attrs(trial.user_attrs)
        if _lost(trial, record.status, retried):
            owner = record.owner or {}
            record.status = Status.LOST.value
            record.message = (
                f"no heartbeat from its tuner (pid {owner.get('pid')} on {owner.get('host')}); "
                "failed and re-queued by another tuner"
            )
        return record


def trial_status(trial: optuna.trial.FrozenTrial, retried: Container[int] = ()) -> str | None:
    """The trial's status as `TrialRecord.of(trial, retried).status` has it."""
    stored = trial.user_attrs.get("status")
    return Status.LOST.value if _lost(trial, stored, retried) else stored


def retried_numbers(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials whose config was queued again (lost or interrupted): the
    `retry_of` of the trials queued to replace them."""
    retries = (t.user_attrs.get("retry_of") for t in trials)
    return {n for n in retries if n is not None}


def _lost(
    trial: optuna.trial.FrozenTrial | optuna.Trial, status: str | None, retried: Container[int]
) -> bool:
    """Failed and queued again, yet not interrupted by its own tuner: failed by another
    tuner once its heartbeat went stale, whatever its owner wrote on it. Optuna finishes
    such a trial before the callback that queues its retry runs
    (`autotune.liveness.retry_lost_trial`), and a finished trial is not written to, so
    this status is derived from the retry. A trial whose dead tuner was seen on this
    machine stores "lost" itself, written before it was failed."""
    return (
        trial.number in retried
        and trial.state.name == "FAIL"
        and status not in (Status.INTERRUPTED.value, Status.LOST.value)
    )


def write_trial(trial: optuna.Trial, **values: Any) -> None:
    """Set fields of a running trial's record (names as in `TrialRecord`; None: skipped)."""
    for key, value in _attrs(values).items():
        trial.set_user_attr(key, value)


def write_trial_by_id(storage: optuna.storages.BaseStorage, trial_id: int, **values: Any) -> None:
    for key, value in _attrs(values).items():
        storage.set_trial_user_attr(trial_id, key, value)


def finished_trial(
    record: TrialRecord,
    *,
    state: optuna.trial.TrialState | None = None,
    values: Sequence[float] | None = None,
    params: dict[str, Any] | None = None,
    distributions: dict[str, optuna.distributions.BaseDistribution] | None = None,
    constraints: dict[str, float] | None = None,
    block_times: Sequence[float] | None = None,
) -> optuna.trial.FrozenTrial:
    """A finished trial (COMPLETE unless `state` says otherwise) holding `record`, for
    `study.add_trial` (a trial copied or imported into a study, a study built to be read),
    laid out as a tuner lays out its own: `constraints` as `set_constraints` stores them,
    `block_times` (of ``record.iters_per_block`` iterations each) as `set_block_times`."""
    import optuna

    system: dict[str, Any] = {}
    if constraints is not None:
        system[LEGACY_CONSTRAINTS_ATTR], readable = _constraints_layout(constraints)
        record = replace(record, **readable)
    if block_times is not None:
        system[BLOCK_TIMES_ATTR] = list(block_times)
        record = replace(record, blocks=len(block_times))
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if state is None else state,
        values=values,
        params=params,
        distributions=distributions,
        user_attrs=record.to_attrs(),
        system_attrs=system,
        constraints=constraints,
    )


def enqueue(
    study: optuna.Study,
    params: dict[str, Any],
    *,
    retry_of: int | None = None,
    starting_point: str | None = None,
) -> None:
    """Queue `params` as the next trial: a retry of trial `retry_of`, or a starting point."""
    record = TrialRecord(retry_of=retry_of, starting_point=starting_point)
    study.enqueue_trial(params, user_attrs=record.to_attrs())


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(TrialRecord)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"not a TrialRecord field: {', '.join(sorted(unknown))}")
    # None is "not written" in a TrialRecord, so a None value writes nothing.
    return {_STORED_AS.get(k, k): v for k, v in values.items() if v is not None}


# --- the sensitivity pass -------------------------------------------------------------------


@dataclass
class SensitivityRecord:
    """Where the sensitivity pass of a model is, for readers of the storage (the report):
    `path`, its cache file, the pass's one home (`autotune.sensitivity` says why). Records
    written before held a copy of the pass instead: the other fields."""

    path: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # `Sensitivity._asdict()`
    eval_limit: int | None = None
    rule: str | None = None
    backend: str | None = None
    reference_metric: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> SensitivityRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in known and v is not None})


def read_sensitivity(study: optuna.Study) -> SensitivityRecord | None:
    attrs = study.user_attrs.get(SENSITIVITY_ATTR)
    return SensitivityRecord.from_attrs(attrs) if attrs else None


def write_sensitivity(study: optuna.Study, record: SensitivityRecord) -> None:
    study.set_user_attr(SENSITIVITY_ATTR, record.to_attrs())
