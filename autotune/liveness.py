"""Which running trials still have a live tuner, and what happens to those that do not.

Each tuner beats a heartbeat on the trials it runs (`Heartbeat`) and records itself as their
owner (`autotune.host.process_identity`). A trial whose heartbeat stops for 3 intervals is
failed by whichever tuner notices first (Optuna's stale-trial check, `retry_lost_trial`); one
whose owner ran on this machine and is gone is failed at once (`fail_dead_local_trials`).
Either way it is lost (it does not count) and its config is queued again. A finished trial
is not written to, so the stale one is read as lost from its retry, while the local one
stores "lost" before it is failed.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from autotune.errors import UsageError
from autotune.host import owner_alive
from autotune.records import TrialRecord, enqueue, write_trial_by_id
from autotune.wire import Status

if TYPE_CHECKING:
    import optuna


def check_heartbeat(seconds: int) -> None:
    # 0 would make the wait for other hosts' last trials a busy loop (and switch heartbeats
    # off); a negative interval raised from time.sleep.
    if seconds < 1:
        raise UsageError(f"--heartbeat must be at least 1 second, not {seconds}")


class Heartbeat:
    """Records the trial's heartbeat while its trial process runs, so other hosts can tell
    a running trial from one whose tuner died."""

    def __init__(self, storage: Any, trial_id: int, interval_s: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self._interval):
            with contextlib.suppress(Exception):  # a missed beat is retried next interval
                self._storage.record_heartbeat(self._trial_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def fail_lost_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    """Dead hosts (stale heartbeat), then this host's dead tuners (kill -9), at once.

    Not stale heartbeats for a while after this tuner saw the storage come back from an
    outage: beats missed while it was away say nothing about their tuners, which get to beat
    again first (`ResilientStorage.calm_for`)."""
    import optuna

    grace = storage.grace_period or 2 * (storage.heartbeat_interval or 0)
    calm_for = getattr(storage, "calm_for", None)  # a ResilientStorage
    if calm_for is None or calm_for(grace):
        optuna.storages.fail_stale_trials(study)
    fail_dead_local_trials(study, storage)


def fail_dead_local_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    """RUNNING trials whose tuner ran under this kernel and PID namespace and is gone:
    fail and re-queue now, without waiting for the heartbeat grace period. Trials of
    other machines or containers (even with this hostname) are left to the heartbeat."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = TrialRecord.of(t).owner or {}
        if owner_alive(owner) is not False:
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            write_trial_by_id(
                storage,
                t._trial_id,
                status=Status.LOST.value,
                message=f"its tuner (pid {owner.get('pid')} on {owner.get('host')}) died; "
                "re-queued",
            )
            if storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                enqueue(study, t.params, retry_of=t.number)


def retry_lost_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial whose tuner stopped beating, just failed by this process: queue its config
    again. The retry marks it lost (`autotune.records.TrialRecord.of`): it does not count,
    whatever its owner wrote on it, and the finished trial itself is not written to.

    Optuna calls this (the storage's stale-trial callback) only in the process whose FAIL
    won, so the trial is ours to re-queue; its owner, if it still runs, finds the trial
    finished when it tells and does not count it.
    """
    enqueue(study, trial.params, retry_of=trial.number)
