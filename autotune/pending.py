"""Measurements the storage has not taken yet, kept on local disk so none is lost.

A tuner writes each measured result to a file (atomically, `autotune.files`) before it
stores it, and removes the file once the storage took it. A tuner that gave up on the
storage (`autotune.resilient_storage.StorageUnavailable`) leaves the file, says where it
is, and the next tuner of the same study on this host stores it before it runs a trial
(`take_in`): into its trial where that is still running (its tuner died with it), else as
a finished trial of its own (another tuner failed the trial as lost meanwhile and queued
its config again; that retry then copies this result instead of measuring again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.files import write_atomic
from autotune.outcome import Scoring, finite, state_of, tell
from autotune.records import TrialRecord, finished_trial
from autotune.wire import Status, TrialResult

if TYPE_CHECKING:
    import optuna


class Pending:
    """The files of one study's unstored measurements on this host (in the cache dir)."""

    def __init__(self, cache_dir: Path, storage_url: str, study_name: str) -> None:
        # The URL may hold a password: only its digest names the folder.
        key = hashlib.sha256(f"{storage_url}\0{study_name}".encode()).hexdigest()[:16]
        self.dir = cache_dir / "pending" / key

    def keep(self, trial_number: int, config_key: str, result: TrialResult) -> Path:
        """Write the measurement of trial `trial_number` (of the config `config_key`)."""
        path = self.dir / f"trial-{trial_number}.json"
        entry = {"trial": trial_number, "config_key": config_key, "result": result.to_dict()}
        write_atomic(path, json.dumps(entry))
        return path

    def entries(self) -> Iterator[tuple[Path, int, str, TrialResult]]:
        for path in sorted(self.dir.glob("trial-*.json")):
            try:
                data = json.loads(path.read_text())
                result = TrialResult.from_dict(data["result"])
                yield path, int(data["trial"]), str(data["config_key"]), result
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: left where it is for a person to look at


def take_in(
    study: optuna.Study, pending: Pending, scoring: Scoring, say: Callable[[str], None]
) -> int:
    """Store every measurement an earlier tuner left in `pending`; how many."""
    import optuna

    stored = 0
    for path, number, key, result in pending.entries():
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        frozen = trials.get(number)
        if frozen is None or TrialRecord.of(frozen).config_key != key:
            continue  # not this study's trial (a study of that name made anew): kept
        told = False
        if frozen.state == optuna.trial.TrialState.RUNNING:
            try:
                tell(study, optuna.Trial(study, frozen._trial_id), result, scoring)
                told = True
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
                frozen = study._storage.get_trial(frozen._trial_id)  # failed just now
        if not told:
            study.add_trial(_as_finished(frozen, result, scoring))
        path.unlink(missing_ok=True)
        stored += 1
        say(f"stored trial {number}'s measurement, kept in {path} when the storage was away")
    return stored


def _as_finished(
    trial: optuna.trial.FrozenTrial, result: TrialResult, scoring: Scoring
) -> optuna.trial.FrozenTrial:
    """`result` as a finished trial of its own, laid out as `autotune.outcome.tell` lays
    out a measured one, with the config and params of `trial`, which ran it."""
    import optuna

    before = TrialRecord.of(trial)
    metrics = dict(result.metrics)
    state = state_of(result.status)
    values = constraints = None
    if state is optuna.trial.TrialState.COMPLETE:
        if result.status is Status.NAN:
            metrics["metric_drop"] = scoring.nan_drop()
        values = scoring.values(metrics)
        constraints = scoring.constraints(metrics)
    record = TrialRecord(
        status=str(result.status),
        message=f"{result.message} (stored late: the storage was unreachable when it was "
        f"measured as trial {trial.number})".strip(),
        config=before.config,
        config_key=before.config_key,
        metrics=finite(metrics),
        timings=result.timings or None,
        environment=result.environment or None,
        stderr_tail=result.stderr_tail or None,
        owner=before.owner,
        machine=before.machine,
        iters_per_block=result.iters_per_block or None,
    )
    return finished_trial(
        record,
        state=state,
        values=values,
        params=trial.params,
        distributions=trial.distributions,
        constraints=constraints,
        block_times=result.block_times or None,
    )
