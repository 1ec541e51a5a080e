"""The study loop: open the study, run its slots (ask -> run one trial in a subprocess ->
tell) until the budget is used up, then confirm the pick; on one or many hosts.

All storage writes happen in tuner processes; trial processes only return results.
Several tuner processes (`autotune study`, `autotune worker` on other hosts) can share one
study through an RDB storage: the trial budget is stored with the study and kept alike by
each (`autotune.ledger`), a heartbeat marks each running trial, and trials of a tuner that
died are failed and re-queued by whoever notices first (`autotune.liveness`). A result
becomes a trial state by `autotune.outcome`; what is not worth running is
`autotune.pruning`. A study's record, reference and starting points come from
`autotune.starting_points`; what a study and its trials store is `autotune.records`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from autotune.analysis import (
    best_feasible,
    confirmation_candidates,
    decide,
    remeasurement_entry,
    slower_than_before,
    trial_rows,
)
from autotune.backends import get_backend
from autotune.child.reference import Reference
from autotune.confirm_claim import claim_confirmation
from autotune.errors import UsageError
from autotune.host import cores_note, machine, machines_warning, slot_threads
from autotune.jobs import describe_model, trial_job
from autotune.launch.probes import check_trial_python
from autotune.launch.runner import RunnerSettings, run_job
from autotune.ledger import Ledger, trials_in_budget
from autotune.liveness import Heartbeat, check_heartbeat
from autotune.measure import Measurement
from autotune.objective import Objective
from autotune.outcome import Scoring, tell, tell_copy
from autotune.pending import Pending, take_in
from autotune.pruning import check_stop_ratio, earlier_outcome, stop_below
from autotune.records import (
    TrialRecord,
    add_confirmation,
    metric_names,
    set_decided,
    study_record,
    write_trial,
)
from autotune.resilient_storage import StorageGone, StorageUnavailable
from autotune.starting_points import open_record, study_reference
from autotune.storage import open_storage
from autotune.study_options import StudyOptions, build_space, metric_limit
from autotune.wire import Status, TrialConfig, TrialResult
from studies import get_study

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

# Winner selection re-measures at least this many times --confirm trials in all (more where
# the search left budget unused).
CONFIRM_CAP_FACTOR = 2
# A re-measurement slower than before is measured again this many times, after a pause (a
# burst of load passes; the faster is kept).
SLOWER_RETRIES = 1
SLOWER_PAUSE_S = 2.0


class Tuner:
    """One tuner process of a study: `run` runs `opts.jobs` slots (or one per device) until
    the study's budget is used up, by this process and any others sharing the study."""

    def __init__(
        self,
        opts: StudyOptions,
        *,
        join_existing: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> None:
        import optuna

        from autotune.sampler import make_sampler, search_state

        if opts.trials < 1:
            raise UsageError(f"--trials must be at least 1, not {opts.trials}")
        check_stop_ratio(opts.stop_slower)
        if opts.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {opts.jobs}")
        check_heartbeat(opts.heartbeat)
        self.opts = opts
        self.say = say or (lambda line: None)  # a line of talk during the study
        self.objective = Objective(opts.objective, opts.latency_percentile, opts.max_latency_ms)
        self.conclusion: str | None = None  # how the pick was decided, once it was
        self.backend = get_backend(opts.backend)
        if opts.devices and not self.backend.visible_devices_env:
            raise UsageError(f"backend {opts.backend} has no device selection (--devices)")
        get_study(opts.model)  # an unknown model or a broken file: one line, before anything
        self.slot_threads = slot_threads(opts.jobs, self.backend.computes_on_host_cpu)
        self.runner = RunnerSettings(
            python=opts.trial_python or RunnerSettings.python,
            timeout_s=opts.timeout_per_trial,
            cache_dir=opts.cache_dir,
            threads=self.slot_threads,
        )
        check_trial_python(self.runner.python, self.backend)
        self.backend.check_devices(self.runner.python, opts.devices)  # e.g. no GPU: exit 2
        # One fp32 pass on the model's own inputs: a model that cannot run fails here, and
        # the weights it has and the metric in force are known before the space is built.
        self.model = describe_model(opts.model, self.runner, opts.eval_limit)
        self.metric = {**self.model.metric, "limit": metric_limit(opts, self.model.metric)}
        self.space = build_space(opts, self.model.weights)
        optuna.logging.set_verbosity(logging.WARNING)
        # We drive heartbeats and stale-trial checks ourselves, through public storage calls.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        self.storage = open_storage(
            opts.storage, heartbeat_s=opts.heartbeat, retry_s=opts.storage_retry_seconds
        )
        if join_existing:
            self.study = optuna.load_study(study_name=opts.name, storage=self.storage)
        else:
            self.study = optuna.create_study(
                study_name=opts.name,
                storage=self.storage,
                directions=[self.objective.direction, "minimize"],
                load_if_exists=True,
            )
            # Shown by optuna-dashboard and plots.
            self.study.set_metric_names(metric_names(self.metric, self.objective))
        # The sampler is per process; its seed only makes a single-process study repeatable.
        self.study.sampler = make_sampler(opts.sampler, self.space, opts.seed, self.objective)
        self._joined = join_existing
        self.record = open_record(
            self.study, self.space, self.backend, opts, self.runner, self.model, self.metric
        )
        self.ledger = Ledger(
            self.study,
            self.storage,
            heartbeat_s=opts.heartbeat,
            threads=self.slot_threads,
            jobs=opts.jobs,
            # autotune's strategy says when nothing is left worth compiling; Optuna's always
            # propose something (repeats are recorded as copies).
            search=partial(search_state, self.space, objective=self.objective)
            if opts.sampler == "autotune"
            else None,
        )
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        # Measurements not yet stored (`autotune.pending`); an earlier run's first.
        self.pending = Pending(opts.cache_dir, opts.storage, opts.name)
        take_in(self.study, self.pending, self._scoring(), self.say)

    def reference(self) -> Reference:
        """The study's fp32 reference (`autotune.starting_points.study_reference`)."""
        ref, self.record = study_reference(self.study, self.record, self.opts, self.runner)
        return ref

    # --- the loop ------------------------------------------------------------------------

    @property
    def budget(self) -> int:
        return self.ledger.budget

    def budget_used(self) -> int:
        """Trials of the study that used up the budget so far, on every host."""
        return self.ledger.used()

    def jobs_note(self) -> str | None:
        """One line at study start when this host's trials share its CPU cores."""
        return cores_note(self.opts.jobs, self.slot_threads)

    def machine_warning(self) -> str | None:
        """One line when this study's CPU trials ran (or are about to run) on more than one
        machine: their throughputs are then not comparable."""
        if not self.backend.computes_on_host_cpu:
            return None
        records = [TrialRecord.of(t).machine for t in self.study.get_trials(deepcopy=False)]
        return machines_warning([machine(), *records])

    def run(self) -> None:
        """Run trials until the study's budget of finished trials is reached.

        `jobs` trials run at once (one per device with --devices). Ctrl-C kills the running
        trial processes, records their trials as interrupted, re-queues them and re-raises.
        """
        ref = self.reference()
        self._bar = _progress(self.budget, self.budget_used(), self.opts.progress)
        slots = self.opts.devices or [None] * self.opts.jobs
        finished = [threading.Event() for _ in slots]
        for device, done in zip(slots, finished, strict=True):
            threading.Thread(target=self._slot_loop, args=(device, ref, done), daemon=True).start()
        # Wait on events, not Thread.join: a join interrupted by Ctrl-C can leave a live thread
        # looking finished (a CPython quirk), and the slots must get to record their trials.
        try:
            while not all(done.wait(0.2) for done in finished):
                pass
        except KeyboardInterrupt:
            self._stop.set()
            self.storage.stop_retrying()  # a slot waiting on an outage stops waiting
            _wait_through_interrupts(finished)
            raise
        finally:
            self._bar.close()
        if self._errors:
            raise self._errors[0]
        if not self._joined:
            self._confirm(ref)

    def _confirm(self, ref: Reference) -> None:
        """Decide the pick by re-measuring, interleaved, in rounds: first the `confirm`
        best first measurements, then any unconfirmed trial that may be better than the
        leader, then the leader and the configs still tied within noise of it
        (`confirmation_candidates`), until none is left or the allowance is spent: the
        budget the search left unused, and at least CONFIRM_CAP_FACTOR * `confirm`. Each
        re-measurement's raw block times go to the study metadata at once (the pick pools
        them; Ctrl-C keeps them). Done by the process that created the study, after the
        search; ends with one line saying how the pick stands (`conclusion`)."""
        if self.opts.confirm < 1:
            return
        decided = study_record(self.study).decided
        if decided and decided.get("after_trials") == self.budget_used():
            self.conclusion = decided.get("conclusion")  # resumed with nothing new
            return
        spare = max(0, self.budget - self.budget_used())
        allowance = max(CONFIRM_CAP_FACTOR * self.opts.confirm, spare)
        made = 0
        todo = confirmation_candidates(trial_rows(self.study), self.opts.confirm)
        while todo and made < allowance and not self._stop.is_set():
            for row in todo[: allowance - made]:
                if not self._confirming():
                    return  # another tuner of the study does it
                if not self._remeasure(row.number, TrialConfig.from_dict(row.config), ref):
                    return  # interrupted
                made += 1
            todo = confirmation_candidates(trial_rows(self.study), self.opts.confirm)
        decision = decide(trial_rows(self.study))
        if decision is None or self._stop.is_set():
            return
        used = self.budget_used()
        settled = "converged" if not todo else "not converged (re-measurements used up)"
        trials = f"{used} of {self.budget} trials" if used < self.budget else f"{used} trials"
        self.conclusion = f"{settled} after {trials} and {made} re-measurements: " + (
            decision.summary()
        )
        set_decided(self.study, used, self.conclusion)

    def _remeasure(self, number: int, config: TrialConfig, ref: Reference) -> bool:
        """Re-measure trial `number`'s config (timing only: its accuracy stands, same config
        and weights, and a full evaluation would cost as much as the timing) and store it.
        A re-measurement clearly slower than the config's earlier ones (`slower_than_before`)
        is measured again after a pause, and the faster kept. False when interrupted (a
        re-measurement already taken is stored first)."""
        job = replace(trial_job(self.opts, config, ref), eval_limit=1)
        before = next((r.pooled for r in trial_rows(self.study) if r.number == number), None)
        kept: tuple[TrialResult, Measurement] | None = None
        attempts = 0
        for attempt in range(1 + SLOWER_RETRIES):
            if attempt and self._stop.wait(SLOWER_PAUSE_S):
                break
            result = run_job(job, self.runner, cancel=self._stop)
            if result.status is Status.INTERRUPTED or not (result.ok and result.block_times):
                break
            attempts += 1
            now = Measurement(tuple(result.block_times), result.iters_per_block, config.batch_size)
            if kept is None or now.throughput > kept[1].throughput:
                kept = result, now
            slower = slower_than_before(before, now)
            if slower is None:
                break
            then = "measuring again" if attempt < SLOWER_RETRIES else "kept the faster"
            self.say(f"re-measuring trial {number}: {slower}: slower than before; {then}")
        if kept is not None:
            taken = kept[0]
            entry = remeasurement_entry(taken.block_times, taken.iters_per_block, taken.metrics)
            if attempts > 1:
                entry["attempts"] = attempts
            if taken.message:
                self.say(f"re-measuring trial {number}: {taken.message}")
        elif result.status is Status.INTERRUPTED:
            return False
        else:  # recorded, so it is not tried again
            entry = {"status": str(result.status), "message": result.message[:200]}
        add_confirmation(self.study, number, entry)
        return not self._stop.is_set()

    def _confirming(self) -> bool:
        """Whether this tuner runs the confirmation pass: one does, however many `study`
        processes share the study (`autotune.confirm_claim`); the claim is renewed."""
        other = claim_confirmation(self.study, stale_s=2 * (self.opts.timeout_per_trial or 600))
        if other is None:
            return True
        who = f"pid {other.get('pid')} on {other.get('host')}"
        self.say(f"the pick is re-measured by another tuner of the study ({who})")
        return False

    def _slot_loop(self, device: str | None, ref: Reference, done: threading.Event) -> None:
        import optuna

        env = {self.backend.visible_devices_env: device} if device is not None else {}
        runner = replace(self.runner, extra_env=env)
        try:
            while not self._stop.is_set():
                trial = self.ledger.next_trial(self._stop)
                if trial is None:
                    return
                # Beat from claim to tell: a trial is never silent while this tuner owns it.
                with Heartbeat(self.storage, trial._trial_id, self.opts.heartbeat):
                    try:
                        self._run_one(trial, runner, ref)
                    except optuna.exceptions.UpdateFinishedTrialError:
                        # Another tuner took it over (stale heartbeat) and re-queued it.
                        if not self.ledger.finished_elsewhere(trial):
                            raise
        except BaseException as exc:  # surface in the main thread; stop the other slots
            self._errors.append(exc)
            self._stop.set()
        finally:
            done.set()

    def _run_one(self, trial: optuna.Trial, runner: RunnerSettings, ref: Reference) -> None:
        config = self.space.suggest(trial)
        write_trial(trial, config=config.to_dict(), config_key=config.key())
        with self.ledger.lock:
            spent = trials_in_budget(self.study.get_trials(deepcopy=False))
            earlier = earlier_outcome(config, spent)
            if earlier is not None:
                copy = partial(tell_copy, self.study, trial, earlier)
                if self.ledger.tell_if_ours(trial, copy):
                    self._advance()
                return
        result = self._measure(trial, config, runner, ref)
        # On disk until the storage took it (`autotune.pending`): nothing measured is lost.
        measured = result.status is not Status.INTERRUPTED
        kept = self.pending.keep(trial.number, config.key(), result) if measured else None
        try:
            with self.ledger.lock:
                if result.status is Status.INTERRUPTED:
                    # Re-queued by us, unless another tuner failed it first (it re-queued it).
                    if self._tell_result(trial, result):
                        self.ledger.requeue(trial)
                    return
                if self._tell_result(trial, result):
                    self._advance()
        except (StorageUnavailable, StorageGone) as exc:
            if kept is None:
                raise
            rerun = "; the next run stores it" if isinstance(exc, StorageUnavailable) else ""
            where = f"trial {trial.number}'s measurement is in {kept}{rerun}"
            raise type(exc)(f"{exc}; {where}") from None
        if kept is not None:
            kept.unlink(missing_ok=True)
        if result.ok and result.message:  # e.g. timed again on a busy machine
            self.say(f"trial {trial.number}: {result.message}")

    def _tell_result(self, trial: optuna.Trial, result: TrialResult) -> bool:
        """Store the result and finish the trial (`autotune.outcome.tell`); False, and
        nothing counted, when another tuner failed it first (`Ledger.tell_if_ours`)."""
        tell_it = partial(tell, self.study, trial, result, self._scoring())
        return self.ledger.tell_if_ours(trial, tell_it)

    def _scoring(self) -> Scoring:
        return Scoring(
            self.record.metric_limit,
            self.opts.min_agreement,
            self.record.reference_metric,
            self.record.metric,
            self.objective,
        )

    def _measure(
        self, trial: optuna.Trial, config: TrialConfig, runner: RunnerSettings, ref: Reference
    ) -> TrialResult:
        job = replace(
            trial_job(self.opts, config, ref),
            # Stopping slow trials is a throughput rule: under --objective latency a
            # low-throughput config (batch 1) is often the one wanted.
            stop_below=stop_below(self.study, self.opts.stop_slower, config)
            if self.objective.kind == "throughput"
            else None,
        )
        result = run_job(job, runner, cancel=self._stop)
        retry = self.backend.retry_config(config, result)
        if retry is not None and not self._stop.is_set():
            # e.g. a trace region too small: one retry with the adjusted config. The config
            # that ran is what the trial stores (and exports); config_key stays the sampled
            # one, so the same suggestion is not run again.
            write_trial(
                trial,
                first_attempt={"status": str(result.status), "message": result.message},
                config=retry.to_dict(),
            )
            result = run_job(replace(job, config=retry), runner, cancel=self._stop)
        return result

    def _advance(self) -> None:
        self._bar.update(1)
        best = best_feasible(trial_rows(self.study))
        if best is not None:
            shown = (
                f"{best.throughput:,.0f} samples/s"
                if self.objective.kind == "throughput"
                else f"p{self.objective.percentile:g} {best.figure:.3g} ms"
            )
            self._bar.set_postfix_str(f"best feasible {shown} (#{best.number})")


def _wait_through_interrupts(events: list[threading.Event]) -> None:
    """Wait until every slot has recorded its trial: a second Ctrl-C (or SIGTERM) right
    after the first must not leave a trial RUNNING until the next run."""
    while True:
        try:
            for done in events:
                done.wait()
            return
        except KeyboardInterrupt:
            continue


def _progress(total: int, done: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="trials",
        unit="trial",
        disable=not enabled,
        dynamic_ncols=True,
    )
