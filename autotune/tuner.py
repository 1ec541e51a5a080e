"""The study loop: ask -> run one trial in a subprocess -> tell, on one or many hosts.

All storage writes happen in tuner processes; trial processes only return results.
Several tuner processes (`autotune study`, `autotune worker` on other hosts) can share one
study through an RDB storage: the trial budget is stored with the study, a heartbeat marks
each running trial, and trials of a tuner that died are failed and re-queued by whoever
notices first (`autotune.liveness`). A new study's starting points are queued by
`autotune.starting_points`; what a study and its trials store is `autotune.records`.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autotune.analysis import (
    best_feasible,
    confirmation_candidates,
    remeasurement_entry,
    trial_rows,
)
from autotune.backends import get_backend
from autotune.child.reference import Reference
from autotune.child.reference import cached as cached_reference
from autotune.errors import UsageError
from autotune.host import machine, process_identity, usable_cores
from autotune.jobs import fp32_reference, trial_job
from autotune.launch.probes import check_trial_python
from autotune.launch.runner import RunnerSettings, run_job
from autotune.liveness import Heartbeat, check_heartbeat, fail_lost_trials
from autotune.records import (
    METRIC_NAMES,
    StudyRecord,
    TrialRecord,
    add_confirmation,
    enqueue,
    named_constraints,
    read_study,
    set_block_times,
    set_constraints,
    study_record,
    trial_status,
    write_study,
    write_trial,
)
from autotune.starting_points import queue_starting_points, recipe_config
from autotune.storage import open_storage
from autotune.study_options import IDENTITY, StudyOptions, build_space
from autotune.wire import Status, TrialConfig, TrialResult
from studies import get_study

if TYPE_CHECKING:
    from collections.abc import Container

    import optuna

# Trials that do not use up the budget: they are re-queued and run again.
NOT_COUNTED = {Status.INTERRUPTED, Status.LOST, Status.SURPLUS}
MEASURED = {Status.OK, Status.NAN, Status.OOM, Status.SLOW}
# Winner selection re-measures at most this many times --confirm trials in all.
CONFIRM_CAP_FACTOR = 2


def counts(t: optuna.trial.FrozenTrial, retried: Container[int] = ()) -> bool:
    """Whether a trial used up one unit of the budget.

    A trial another tuner failed under its owner (stale heartbeat) never does, whatever its
    owner wrote on it first: its config was queued again (its number is in `retried`, see
    `retried_numbers`), and a measured status (ok, nan, oom) on a FAIL trial can only be
    such an owner's (its own tell finishes those COMPLETE or PRUNED)."""
    status = trial_status(t)
    if not t.state.is_finished() or status is None or status in NOT_COUNTED:
        return False
    if t.number in retried:
        return False
    return not (t.state.name == "FAIL" and status in MEASURED)


def retried_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials whose config was queued again (lost or interrupted)."""
    retries = (TrialRecord.of(t).retry_of for t in trials)
    return {n for n in retries if n is not None}


class Tuner:
    def __init__(self, opts: StudyOptions, *, join_existing: bool = False) -> None:
        import optuna

        from autotune.sampler import make_sampler

        if opts.trials < 1:
            raise UsageError(f"--trials must be at least 1, not {opts.trials}")
        if opts.stop_slower < 0 or 0 < opts.stop_slower <= 1:
            raise UsageError(f"--stop-slower must be 0 (off) or above 1, not {opts.stop_slower:g}")
        if opts.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {opts.jobs}")
        check_heartbeat(opts.heartbeat)
        self.opts = opts
        self.backend = get_backend(opts.backend)
        if opts.devices and not self.backend.visible_devices_env:
            raise UsageError(f"backend {opts.backend} has no device selection (--devices)")
        self.space = build_space(opts)
        # Trials at once on this host's CPU would share its cores: each gets its share of
        # threads (also for re-measurements, so the figures stay comparable).
        self.slot_threads = (
            max(1, usable_cores() // opts.jobs)
            if self.backend.computes_on_host_cpu and opts.jobs > 1
            else None
        )
        self.runner = RunnerSettings(
            python=opts.trial_python or RunnerSettings.python,
            timeout_s=opts.timeout_per_trial,
            cache_dir=opts.cache_dir,
            threads=self.slot_threads,
        )
        check_trial_python(self.runner.python, self.backend)
        self.backend.check_devices(self.runner.python, opts.devices)  # e.g. no GPU: exit 2
        optuna.logging.set_verbosity(logging.WARNING)
        # We drive heartbeats and stale-trial checks ourselves, through public storage calls.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        self.storage = open_storage(opts.storage, heartbeat_s=opts.heartbeat)
        if join_existing:
            self.study = optuna.load_study(study_name=opts.name, storage=self.storage)
        else:
            self.study = optuna.create_study(
                study_name=opts.name,
                storage=self.storage,
                directions=["maximize", "minimize"],
                load_if_exists=True,
            )
            self.study.set_metric_names(METRIC_NAMES)  # shown by optuna-dashboard and plots
        # The sampler is per process; its seed only makes a single-process study repeatable.
        self.study.sampler = make_sampler(opts.sampler, self.space, opts.seed)
        self._joined = join_existing
        self.record, created = self._check_metadata()
        if created:
            queue_starting_points(self.study, self.space, self.backend, opts, self.runner)
        self._lock = threading.Lock()  # one ask/tell bookkeeping step at a time per process
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

    # --- study metadata ------------------------------------------------------------------

    def _check_metadata(self) -> tuple[StudyRecord, bool]:
        """The study's record, and whether this call created it (a new study); an existing
        study must have been started with the same identity options and space."""
        record = read_study(self.study)
        wanted = {**self.opts.shared(), "space_signature": self.space.signature()}
        if record is None:
            record = StudyRecord(
                options=wanted,
                trials_budget=self.opts.trials,
                weight_groups=self._weight_groups(),
                reference_recipe=recipe_config(self.space, self.backend),
            )
            write_study(self.study, record)
            return record, True
        for key in (*IDENTITY, "space_signature"):
            if record.options.get(key) != wanted[key]:
                what = "space" if key == "space_signature" else key.replace("_", " ")
                raise UsageError(
                    f"study {self.opts.name!r} exists with a different {what}; "
                    f"resume it with its original options or start a new one with --study-name"
                )
        if record.trials_budget != self.opts.trials:
            record.trials_budget = self.opts.trials
            write_study(self.study, record)
        return record, False

    def _weight_groups(self) -> dict[str, list[str]]:
        """Each weight-dtype dimension's label -> the weight names it sets."""
        from fnmatch import fnmatchcase

        names = [w.name for w in get_study(self.opts.model).weights]
        return {
            label: [n for n in names if any(fnmatchcase(n, m) for m in members)]
            for label, members in self.space.weight_groups().items()
        }

    def reference(self) -> Reference:
        """fp32 outputs on the eval set (`autotune.child.reference`): one cached file per model,
        weights and eval set on this host, shared by its studies and sensitivity passes."""
        recorded = self.record.reference_fingerprint
        if recorded:
            hit = cached_reference(self.opts.cache_dir, self.opts.model, recorded)
            if hit is not None:
                return replace(hit, accuracy=self.record.reference_accuracy)
        ref = fp32_reference(
            self.opts.model, self.opts.eval_limit, self.runner, self.opts.cache_dir
        )
        if recorded and recorded != ref.fingerprint:
            print(
                f"autotune: warning: model {self.opts.model!r} here (weights, code or eval "
                "data) differs from the one this study started with; accuracy is measured "
                "against this host's fp32 outputs",
                file=sys.stderr,
                flush=True,
            )
            return ref
        self.record = replace(
            read_study(self.study) or self.record,
            reference_accuracy=ref.accuracy,
            reference_environment=ref.environment,
            reference_fingerprint=ref.fingerprint,
        )
        write_study(self.study, self.record)
        return ref

    # --- the loop ------------------------------------------------------------------------

    @property
    def budget(self) -> int:
        return int(study_record(self.study).trials_budget)

    def counted_trials(self) -> int:
        return len(self._counted(self.study.get_trials(deepcopy=False)))

    @staticmethod
    def _counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
        retried = retried_numbers(trials)
        return [t for t in trials if counts(t, retried)]

    def jobs_note(self) -> str | None:
        """One line at study start when this host's trials share its CPU cores."""
        if self.slot_threads is None:
            return None
        return (
            f"note: {self.opts.jobs} trials at once share this host's {usable_cores()} cores "
            f"({self.slot_threads} thread(s) each); CPU throughput measured under --jobs > 1 "
            "is not comparable with a lone run"
        )

    def machine_warning(self) -> str | None:
        """One line when this study's CPU trials ran (or are about to run) on more than one
        machine: their throughputs are then not comparable."""
        if not self.backend.computes_on_host_cpu:
            return None
        seen: dict[tuple, dict[str, Any]] = {}
        records = [TrialRecord.of(t).machine for t in self.study.get_trials(deepcopy=False)]
        for m in [machine(), *records]:
            if isinstance(m, dict):
                seen.setdefault((m.get("cpu"), m.get("host"), m.get("id")), m)
        if len(seen) < 2:
            return None
        names = "; ".join(f"{m.get('cpu')} on {m.get('host')}" for m in seen.values())
        return (
            f"warning: this study's CPU trials run on {len(seen)} machines ({names}); "
            "their throughputs are not comparable"
        )

    def run(self) -> None:
        """Run trials until the study's budget of finished trials is reached.

        `jobs` trials run at once (one per device with --devices). Ctrl-C kills the running
        trial processes, records their trials as interrupted, re-queues them and re-raises.
        """
        ref = self.reference()
        self._bar = _progress(self.budget, self.counted_trials(), self.opts.progress)
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
            for done in finished:
                done.wait()
            raise
        finally:
            self._bar.close()
        if self._errors:
            raise self._errors[0]
        if not self._joined:
            self._confirm(ref)

    def _confirm(self, ref: Reference) -> None:
        """Re-measure until the pick is a re-measured trial: first the `confirm` best first
        measurements, then the top by pooled figure while it is unconfirmed (see
        `confirmation_candidates`), at most CONFIRM_CAP_FACTOR * `confirm` re-measurements.
        At the cap the pick is the best re-measured trial. Each re-measurement's raw block
        times go to the study metadata at once (the pick pools them; Ctrl-C keeps them).
        Done by the process that created the study, after the budget."""
        for _ in range(CONFIRM_CAP_FACTOR * self.opts.confirm):
            todo = confirmation_candidates(trial_rows(self.study), self.opts.confirm)
            if not todo or self._stop.is_set():
                return
            row = todo[0]
            # Timing only: the trial's accuracy stands (same config, same weights), and the
            # full-set evaluation would cost as much as the timing.
            config = TrialConfig.from_dict(row.config)
            job = replace(trial_job(self.opts, config, ref), eval_limit=1)
            result = run_job(job, self.runner, cancel=self._stop)
            if result.status is Status.INTERRUPTED:
                return
            if result.ok and result.block_times:
                entry = remeasurement_entry(result.block_times, result.iters_per_block)
            else:  # recorded, so it is not tried again
                entry = {"status": str(result.status), "message": result.message[:200]}
            add_confirmation(self.study, row.number, entry)

    def _slot_loop(
        self, device: str | None, ref: Reference, done: threading.Event
    ) -> None:
        import optuna

        env = {self.backend.visible_devices_env: device} if device is not None else {}
        runner = replace(self.runner, extra_env=env)
        try:
            while not self._stop.is_set():
                trial = self._next_trial()
                if trial is None:
                    return
                # Beat from claim to tell: a trial is never silent while this tuner owns it.
                with Heartbeat(self.storage, trial._trial_id, self.opts.heartbeat):
                    try:
                        self._run_one(trial, runner, ref)
                    except optuna.exceptions.UpdateFinishedTrialError:
                        # Another tuner took it over (stale heartbeat) and re-queued it.
                        if not self._finished_elsewhere(trial):
                            raise
        except BaseException as exc:  # surface in the main thread; stop the other slots
            self._errors.append(exc)
            self._stop.set()
        finally:
            done.set()

    def _next_trial(self) -> optuna.Trial | None:
        """Ask for a trial if the budget is not used up; wait while others finish the last."""
        import optuna

        while not self._stop.is_set():
            with self._lock:
                fail_lost_trials(self.study, self.storage)  # dead hosts and tuners
                trials = self.study.get_trials(deepcopy=False)
                done = len(self._counted(trials))
                if done >= self.budget:
                    return None
                running = sum(1 for t in trials if t.state == optuna.trial.TrialState.RUNNING)
                if done + running < self.budget:  # queued trials come first
                    trial = self.study.ask()
                    if self._is_surplus(trial):
                        self._tell(trial, TrialResult(Status.SURPLUS, "budget already taken"))
                        continue
                    self._claim(trial)
                    return trial
            # The last trials run elsewhere; keep watching in case their host dies.
            time.sleep(min(2.0, self.opts.heartbeat / 2))
        return None

    def _is_surplus(self, trial: optuna.Trial) -> bool:
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
            and (counts(t, retried) or t.state == optuna.trial.TrialState.RUNNING)
        )
        return before >= self.budget

    def _claim(self, trial: optuna.Trial) -> None:
        # Who runs it (liveness, see autotune.host) and on what (throughput depends on it).
        write_trial(
            trial,
            owner=process_identity(),
            machine={**machine(), "threads": self.slot_threads, "jobs": self.opts.jobs},
        )
        self.storage.record_heartbeat(trial._trial_id)

    def _run_one(
        self, trial: optuna.Trial, runner: RunnerSettings, ref: Reference
    ) -> None:
        config = self.space.suggest(trial)
        write_trial(trial, config=config.to_dict(), config_key=config.key())
        with self._lock:
            earlier = self._earlier_outcome(config, trial.number)
            if earlier is not None:
                if self._told(trial, self._copy_outcome, trial, earlier):
                    self._advance()
                return
        result = self._measure(trial, config, runner, ref)
        with self._lock:
            if result.status is Status.INTERRUPTED:
                # Re-queued by us, unless another tuner failed it first (it re-queued it).
                if self._tell(trial, result):
                    enqueue(self.study, trial.params, retry_of=trial.number)
                return
            if self._tell(trial, result):
                self._advance()

    def _measure(
        self,
        trial: optuna.Trial,
        config: TrialConfig,
        runner: RunnerSettings,
        ref: Reference,
    ) -> TrialResult:
        job = replace(trial_job(self.opts, config, ref), stop_below=self._stop_below())
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

    def _stop_below(self) -> float | None:
        """Clearly losing (tinygrad's BEAM stops timing at 3x slower than the best): the
        trial ends after warm-up, which saves its timing and its full-set evaluation."""
        if not self.opts.stop_slower:
            return None
        best = best_feasible(trial_rows(self.study))
        return best.throughput / self.opts.stop_slower if best is not None else None

    def _advance(self) -> None:
        self._bar.update(1)
        best = best_feasible(trial_rows(self.study))
        if best is not None:
            self._bar.set_postfix_str(
                f"best feasible {best.throughput:,.0f} samples/s (#{best.number})"
            )

    def _earlier_outcome(self, config: TrialConfig, number: int) -> optuna.trial.FrozenTrial | None:
        """A counted trial that makes running `config` pointless: the same config, or the
        same config at a smaller batch size that ran out of memory."""
        key = config.key()
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number or not counts(t):
                continue
            record = TrialRecord.of(t)
            if record.config_key == key:
                return t
            if record.status == Status.OOM and record.config is not None:
                other = TrialConfig.from_dict(record.config)
                if (
                    other.batch_size <= config.batch_size
                    and other.with_batch_size(config.batch_size) == config
                ):
                    return t
        return None

    def _copy_outcome(self, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        """Record what an earlier trial already showed, without starting a trial process."""
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
        self.study.tell(trial, earlier.values, state=earlier.state)

    def _tell(self, trial: optuna.Trial, result: TrialResult) -> bool:
        """Store the result and finish the trial (see `_store_result`). False, and nothing
        counted, when another tuner failed the trial first (its heartbeat went stale):
        that tuner marked it lost and queued its config again."""
        return self._told(trial, self._store_result, trial, result)

    def _told(self, trial: optuna.Trial, finish: Any, *args: Any) -> bool:
        """Run `finish(*args)`, which finishes `trial`; False when someone else did first."""
        import optuna

        try:
            finish(*args)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            # Optuna raises ValueError("Cannot tell a FAIL trial") when the state it read was
            # already finished, UpdateFinishedTrialError when it changed under the write.
            if not self._finished_elsewhere(trial):
                raise
            return False
        return True

    def _finished_elsewhere(self, trial: optuna.Trial) -> bool:
        """Called when a write to `trial` was refused: whether the trial is finished (by
        another tuner; our own finishing write is the last one we make)."""
        return self.storage.get_trial(trial._trial_id).state.is_finished()

    def _store_result(self, trial: optuna.Trial, result: TrialResult) -> None:
        """Store the result on the trial, then finish it: OOM and slow are PRUNED, a measured
        trial (ok, or NaN outputs) is COMPLETE with its constraint, anything else is FAIL."""
        import optuna

        _record(trial, result)
        if result.status in (Status.OOM, Status.SLOW):
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return
        if result.status not in (Status.OK, Status.NAN):
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        metrics = result.metrics
        if result.status is Status.NAN:
            # Garbage outputs: as bad as predicting nothing right. Measured, never feasible.
            ref_acc = self.record.reference_accuracy
            metrics["accuracy_drop"] = 100.0 * (ref_acc if ref_acc is not None else 1.0)
            write_trial(trial, metrics=_finite(metrics))
        drop = metrics["accuracy_drop"]
        constraints = {"accuracy_drop": drop - self.opts.max_accuracy_drop}
        if self.opts.min_agreement is not None:
            # Top-1 accuracy can hide flipped predictions that cancel out; agreement cannot.
            agreement = 100.0 * (metrics.get("agreement") or 0.0)
            constraints["agreement"] = self.opts.min_agreement - agreement
        set_constraints(trial, constraints)
        self.study.tell(trial, [metrics["throughput_samples_per_s"], drop])


def _record(trial: optuna.Trial, result: TrialResult) -> None:
    write_trial(
        trial,
        status=str(result.status),
        message=result.message,
        metrics=_finite(result.metrics),
        timings=result.timings,
        environment=result.environment or None,
        stderr_tail=result.stderr_tail or None,
    )
    if result.block_times:  # raw samples out of the user attrs (see autotune.records)
        set_block_times(trial, result.block_times, result.iters_per_block)


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON user attrs cannot hold NaN/inf portably; keep the keys, store None.
    return {
        k: (v if isinstance(v, int | float) and math.isfinite(v) else None)
        for k, v in metrics.items()
    }


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
