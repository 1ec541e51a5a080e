"""The trial budget of a study, kept alike by every tuner that shares the study.

The budget is stored with the study. A trial uses up one unit of it once it finished with
a result of its own (`uses_budget`); an interrupted, lost or surplus trial does not (the
first two are queued again). A tuner asks for a trial only while the budget is not taken
(`Ledger.next_trial`), gives up one asked at the same moment as another host's for the last
unit (`Ledger.is_surplus`), and finishes a trial only where no other tuner did first
(`Ledger.tell_if_ours`): a trial whose heartbeat went stale is failed and queued again by
whichever tuner notices first (`autotune.liveness`), and then its owner's result is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container
from functools import partial
from typing import TYPE_CHECKING

from autotune.host import machine, process_identity
from autotune.liveness import fail_lost_trials
from autotune.outcome import tell_unmeasured
from autotune.records import (
    TrialRecord,
    enqueue,
    retried_numbers,
    study_record,
    trial_status,
    write_trial,
)
from autotune.wire import Status, TrialResult

if TYPE_CHECKING:
    import optuna

# Trials that do not use up the budget: they are re-queued and run again, or never ran.
NOT_COUNTED = {Status.INTERRUPTED, Status.LOST, Status.SURPLUS}
# Statuses of a trial its own tuner finished COMPLETE or PRUNED (`autotune.outcome.state_of`).
MEASURED = {Status.OK, Status.NAN, Status.OOM, Status.SLOW}


def uses_budget(t: optuna.trial.FrozenTrial, retried: Container[int]) -> bool:
    """Whether a trial used up one unit of the budget.

    A trial another tuner failed under its owner (stale heartbeat) never does, whatever its
    owner wrote on it first: its config was queued again (its number is in `retried`, see
    `autotune.records.retried_numbers`), and a measured status (ok, nan, oom) on a FAIL trial
    can only be such an owner's (its own tell finishes those COMPLETE or PRUNED)."""
    status = trial_status(t, retried)
    if not t.state.is_finished() or status is None or status in NOT_COUNTED:
        return False
    if t.number in retried:
        return False
    return not (t.state.name == "FAIL" and status in MEASURED)


def trials_in_budget(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that used up the budget, one unit each."""
    retried = retried_numbers(trials)
    return [t for t in trials if uses_budget(t, retried)]


class Ledger:
    """This tuner's bookkeeping of the shared budget. `lock` makes each ask or tell step of
    this process's slots one step (between hosts, `is_surplus` settles the last unit)."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.RDBStorage,
        *,
        heartbeat_s: float,
        threads: int | None,
        jobs: int,
        search: Callable[[list[optuna.trial.FrozenTrial]], str] | None = None,
    ) -> None:
        self.study, self.storage = study, storage
        self.lock = threading.Lock()
        # What the search strategy has left (`autotune.sampler.search_state`); None: a
        # sampler that always has a proposal. `search_done` once it had nothing.
        self._search = search
        self.search_done = False
        self._heartbeat_s = heartbeat_s
        # What a claimed trial ran on (throughput depends on it); see autotune.host.
        self._machine = {**machine(), "threads": threads, "jobs": jobs}

    @property
    def budget(self) -> int:
        return int(study_record(self.study).trials_budget)

    def used(self) -> int:
        """Units of the budget used up so far, by every tuner of the study."""
        return len(trials_in_budget(self.study.get_trials(deepcopy=False)))

    def next_trial(self, stop: threading.Event) -> optuna.Trial | None:
        """Ask for a trial if the budget is not used up; wait while others finish the last,
        or while the search waits on running trials. None once the budget is used up, the
        search has nothing left (`search_done`), or `stop` is set."""
        import optuna

        while not stop.is_set():
            with self.lock:
                fail_lost_trials(self.study, self.storage)  # dead hosts and tuners
                trials = self.study.get_trials(deepcopy=False)
                done = len(trials_in_budget(trials))
                if done >= self.budget:
                    return None
                running = sum(1 for t in trials if t.state == optuna.trial.TrialState.RUNNING)
                waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
                state = self._search(trials) if self._search and not waiting else "open"
                if state == "done":  # nothing left worth compiling: the budget is not padded
                    self.search_done = True
                    return None
                if state == "open" and done + running < self.budget:  # queued trials first
                    trial = self.study.ask()
                    if self.is_surplus(trial):
                        surplus = TrialResult(Status.SURPLUS, "budget already taken")
                        self.tell_if_ours(
                            trial, partial(tell_unmeasured, self.study, trial, surplus)
                        )
                        continue
                    self.claim(trial)
                    return trial
            # The last trials run elsewhere; keep watching in case their host dies.
            time.sleep(min(2.0, self._heartbeat_s / 2))
        return None

    def is_surplus(self, trial: optuna.Trial) -> bool:
        """Two hosts may ask at the same moment for the last unit of budget: the trial with
        the lower number wins, queued starting points included. Only a retry of a lost or
        interrupted trial always runs (it replaces a trial that did not count)."""
        import optuna

        if TrialRecord.of(self.storage.get_trial(trial._trial_id)).retry_of is not None:
            return False
        trials = self.study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        before = sum(
            1
            for t in trials
            if t.number < trial.number
            and (uses_budget(t, retried) or t.state == optuna.trial.TrialState.RUNNING)
        )
        return before >= self.budget

    def claim(self, trial: optuna.Trial) -> None:
        """Record this process as the trial's owner (liveness, see autotune.host), and what
        it runs on; its first heartbeat."""
        write_trial(trial, owner=process_identity(), machine=self._machine)
        self.storage.record_heartbeat(trial._trial_id)

    def tell_if_ours(self, trial: optuna.Trial, tell: Callable[[], None]) -> bool:
        """Run `tell`, which finishes `trial`. False, and nothing counted, when another tuner
        failed the trial first (its heartbeat went stale): that tuner queued its config
        again, and the retry marks it lost."""
        import optuna

        try:
            tell()
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            # Optuna raises ValueError("Cannot tell a FAIL trial") when the state it read was
            # already finished, UpdateFinishedTrialError when it changed under the write.
            if not self.finished_elsewhere(trial):
                raise
            return False
        return True

    def finished_elsewhere(self, trial: optuna.Trial) -> bool:
        """Called when a write to `trial` was refused: whether the trial is finished (by
        another tuner; our own finishing write is the last one we make)."""
        return self.storage.get_trial(trial._trial_id).state.is_finished()

    def requeue(self, trial: optuna.Trial) -> None:
        """Queue the config of a trial that did not count (interrupted) to run again."""
        enqueue(self.study, trial.params, retry_of=trial.number)
