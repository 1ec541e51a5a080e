"""Who owns a running trial, and what happens when another tuner takes it over.

Each test drives real tuners (`Tuner` objects) on a real SQLite study. "Another host" is a
second Optuna study object on the same storage, doing what `autotune worker` on another
machine does: fail trials whose heartbeat went stale (optuna.storages.fail_stale_trials,
the call the tuner makes) or record an owner that is not this process. A stale heartbeat is
made by moving the stored heartbeat into the past instead of waiting for the grace period.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from autotune.host import kernel_id, machine, process_identity
from autotune.liveness import fail_dead_local_trials
from autotune.records import TrialRecord, enqueue, retried_numbers, write_trial
from autotune.storage import open_storage
from autotune.study_options import StudyOptions
from autotune.tuner import Tuner
from autotune.wire import Status, TrialResult

STUDY = "mnist-cpu"


def make_tuner(tmp_path: Path, *, trials: int = 2, join: bool = False, jobs: int = 1) -> Tuner:
    opts = StudyOptions(
        model="mnist",
        trials=trials,
        storage=f"sqlite:///{tmp_path / 'autotune.db'}",
        starting_points=False,
        cache_dir=tmp_path / "cache",
        heartbeat=1,
        jobs=jobs,
        progress=False,
    )
    return Tuner(opts, join_existing=join)


def other_host(tuner: Tuner) -> optuna.Study:
    """The study as a tuner elsewhere sees it (its own storage object and cache)."""
    storage = open_storage(tuner.opts.storage, heartbeat_s=1)
    return optuna.load_study(study_name=STUDY, storage=storage)


def stored(tuner: Tuner) -> list[optuna.trial.FrozenTrial]:
    """The trials as a fresh reader sees them (no process's cache)."""
    return optuna.load_study(study_name=STUDY, storage=tuner.opts.storage).get_trials()


def heartbeats_go_stale(tuner: Tuner) -> None:
    engine = sqlalchemy.create_engine(tuner.opts.storage)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = '2000-01-01'"))
    engine.dispose()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


OK = TrialResult(
    Status.OK, metrics={"throughput_samples_per_s": 1000.0, "metric_drop": 0.1, "agreement": 1}
)
CRASH = TrialResult(Status.CRASH, "trial process killed by SIGSEGV")


# --- a trial failed under its owner by another host (stale heartbeat) ------------------------


@pytest.mark.parametrize("result", [OK, CRASH], ids=["ok", "crash"])
@pytest.mark.parametrize("when", ["before_tell", "inside_tell"])
def test_stale_failed_trial_counts_once_and_owner_goes_on(tmp_path, monkeypatch, when, result):
    """The owner's result arrives after another host failed the trial (or while it is being
    written): the owner neither aborts nor counts it; the trial is `lost`, queued once."""
    tuner = make_tuner(tmp_path)
    elsewhere = other_host(tuner)
    trial = tuner.study.ask()
    tuner.ledger.claim(trial)
    heartbeats_go_stale(tuner)
    if when == "before_tell":
        optuna.storages.fail_stale_trials(elsewhere)
    else:  # after the owner stored its result attributes, before it finishes the trial
        tell = tuner.study.tell

        def tell_after_takeover(*args, **kwargs):
            optuna.storages.fail_stale_trials(elsewhere)
            return tell(*args, **kwargs)

        monkeypatch.setattr(tuner.study, "tell", tell_after_takeover)

    assert tuner._tell_result(trial, result) is False  # not told: someone else finished it

    trials = stored(tuner)
    lost = trials[trial.number]
    assert lost.state == optuna.trial.TrialState.FAIL
    record = TrialRecord.of(lost, retried_numbers(trials))
    assert record.status == "lost"
    assert "heartbeat" in record.message
    retries = [t for t in trials if TrialRecord.of(t).retry_of == trial.number]
    assert [t.state for t in retries] == [optuna.trial.TrialState.WAITING]
    assert tuner.budget_used() == 0
    assert make_tuner(tmp_path, join=True).budget_used() == 0


def test_failed_trial_with_a_retry_never_counts(tmp_path):
    """Between another host failing a trial and queuing its retry (which marks it `lost`),
    a reader sees the trial with its owner's status (here "crash"); once its retry is
    queued it does not count."""
    tuner = make_tuner(tmp_path)
    trial = tuner.study.ask()
    tuner.ledger.claim(trial)
    write_trial(trial, status="crash")
    elsewhere = other_host(tuner)
    tuner.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    enqueue(elsewhere, trial.params, retry_of=trial.number)
    assert tuner.budget_used() == 0


# --- whose trial is it: hosts with one hostname, reused pids ---------------------------------


def test_liveness_is_judged_by_kernel_and_process_start_not_hostname(tmp_path):
    tuner = make_tuner(tmp_path, trials=10)
    me = process_identity()
    assert me["host"] == socket.gethostname() and me["pid"] == os.getpid()
    other_boot = f"00000000-0000-0000-0000-000000000000/{os.readlink('/proc/self/ns/pid')}"
    owners = {
        # A container elsewhere with our hostname: its pids mean nothing here.
        "same_hostname_other_machine": {**me, "kernel": other_boot, "pid": dead_pid()},
        # Another container on this kernel (its own PID namespace), same hostname.
        "same_hostname_other_pid_namespace": {
            **me,
            "kernel": f"{kernel_id().split('/')[0]}/pid:[1]",
            "pid": dead_pid(),
        },
        # This machine, a pid that now belongs to another process (here: ours).
        "reused_pid": {**me, "start": me["start"] - 1},
        "dead": {**me, "pid": dead_pid()},
        "alive": me,
        # Written by a version that recorded only the hostname: the heartbeat decides.
        "hostname_only": {"host": me["host"], "pid": dead_pid()},
    }
    numbers = {}
    for name, owner in owners.items():
        trial = tuner.study.ask()
        write_trial(trial, owner=owner)
        numbers[name] = trial.number
    with tuner.ledger.lock:
        fail_dead_local_trials(tuner.study, tuner.storage)
    trials = stored(tuner)
    failed = {n for n, num in numbers.items() if trials[num].state.is_finished()}
    assert failed == {"reused_pid", "dead"}
    for name in failed:
        t = trials[numbers[name]]
        assert TrialRecord.of(t).status == "lost"
        assert [TrialRecord.of(r).retry_of for r in trials].count(t.number) == 1


def test_claim_records_process_and_machine(tmp_path):
    tuner = make_tuner(tmp_path)
    trial = tuner.study.ask()
    tuner.ledger.claim(trial)
    record = TrialRecord.of(stored(tuner)[trial.number])
    assert record.owner == process_identity()
    assert record.machine["cpu"] == machine()["cpu"]
    assert record.machine["host"] == socket.gethostname()


# --- the budget -----------------------------------------------------------------------------


def test_queued_starting_point_past_the_budget_is_surplus_but_a_retry_is_not(tmp_path):
    """Two hosts at the boundary: the one holding the later trial does not run it, even when
    it is a queued starting point. A retry of a lost trial replaces that trial and runs."""
    tuner = make_tuner(tmp_path, trials=1)
    host_b = make_tuner(tmp_path, trials=1, join=True)
    first = tuner.study.ask()  # host A holds the last unit of budget
    assert not tuner.ledger.is_surplus(first)
    params = {"log2_batch_size": 6, "optimization_level": 0, "activation_dtype": "fp32"}
    enqueue(host_b.study, params, starting_point="baseline")
    enqueue(host_b.study, params, retry_of=99)
    # Queued first (the study's own starting points, then ours), the retry last.
    asked = [host_b.study.ask() for _ in range(len(stored(tuner)) - 1)]
    records = [TrialRecord.of(t) for t in asked]
    assert TrialRecord.of(first).retry_of is None and records[-1] == TrialRecord(retry_of=99)
    assert TrialRecord(starting_point="baseline") in records
    for trial, record in zip(asked[:-1], records[:-1], strict=True):
        assert record.starting_point is not None and host_b.ledger.is_surplus(trial), record
    assert not host_b.ledger.is_surplus(asked[-1])


# --- CPU studies: cores shared by slots, machines that differ -------------------------------


def test_machines_that_differ_are_named_in_one_line(tmp_path):
    tuner = make_tuner(tmp_path)
    assert tuner.machine_warning() is None
    trial = tuner.study.ask()
    tuner.ledger.claim(trial)
    assert tuner.machine_warning() is None  # only this machine so far
    elsewhere = other_host(tuner).ask()
    other = {**machine(), "cpu": "AMD EPYC 7B13", "host": "box-b", "id": "b" * 32}
    write_trial(elsewhere, machine=other)
    warning = tuner.machine_warning()
    assert warning is not None and "\n" not in warning
    assert "AMD EPYC 7B13 on box-b" in warning and machine()["cpu"] in warning
    assert "not comparable" in warning


def test_jobs_share_the_cores(tmp_path):
    from autotune.host import usable_cores

    tuner = make_tuner(tmp_path, jobs=2)
    threads = max(1, usable_cores() // 2)
    assert tuner.slot_threads == threads
    note = tuner.jobs_note()
    assert note is not None and "\n" not in note and "not comparable" in note
    assert make_tuner(tmp_path, join=True).jobs_note() is None  # one slot: nothing shared
