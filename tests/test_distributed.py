"""Nothing lost: tuners killed with -9, parallel slots, and two hosts on real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from autotune.records import TrialRecord, retried_numbers, trial_status
from tests.conftest import ROOT, UNSEEDED_ARGS

pytestmark = pytest.mark.slow


def autotune_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "autotune", *args]


def spawn(cmd: list[str], cwd: Path, cache_dir: Path) -> subprocess.Popen:
    """Start a tuner; its output goes to files (a pipe nobody reads could block it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache_dir)}
    n = len(list(cwd.glob("spawn-*.out")))
    out = open(cwd / f"spawn-{n}.out", "w+")  # noqa: SIM115 - lives as long as the process
    err = open(cwd / f"spawn-{n}.err", "w+")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
    proc.output_files = (out, err)  # type: ignore[attr-defined]
    return proc


def output_of(proc: subprocess.Popen) -> str:
    texts = []
    for f in proc.output_files:  # type: ignore[attr-defined]
        f.flush()
        f.seek(0)
        texts.append(f.read())
    return "\n".join(texts)


def trials_of(storage: str, name: str = "mnist-cpu") -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # not created yet, or being created
        return []


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise AssertionError(f"condition not reached (exit {proc.returncode}):\n{output_of(proc)}")


def running_trial_of(storage: str, pid: int) -> optuna.trial.FrozenTrial | None:
    for t in trials_of(storage):
        if (
            t.state == optuna.trial.TrialState.RUNNING
            and (TrialRecord.of(t).owner or {}).get("pid") == pid
            and TrialRecord.of(t).config is not None
        ):
            return t
    return None


def assert_nothing_lost(storage: str, budget: int, killed: int) -> None:
    trials = trials_of(storage)
    by_number = {t.number: t for t in trials}
    retried = retried_numbers(trials)
    status = {t.number: trial_status(t, retried) for t in trials}
    counted = [t for t in trials if status[t.number] in ("ok", "oom", "nan")]
    assert len(counted) == budget, [(t.number, t.state, status[t.number]) for t in trials]
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    lost = by_number[killed]
    assert lost.state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if TrialRecord.of(t).retry_of == killed]
    assert len(retries) == 1, "the killed trial's config must be queued exactly once"
    assert status[killed] == "lost"
    assert retries[0].params == lost.params and status[retries[0].number] == "ok"


def test_kill_9_then_resume_on_the_same_host(tmp_path, fast_space, cache_dir):
    storage = f"sqlite:///{tmp_path / 'autotune.db'}"
    cmd = autotune_cmd(
        "study", "--model", "mnist", "--trials", "3", "--space", str(fast_space), *UNSEEDED_ARGS
    )
    tuner = spawn(cmd, tmp_path, cache_dir)
    wait_for(
        lambda: (
            any(t.state.is_finished() for t in trials_of(storage))
            and running_trial_of(storage, tuner.pid) is not None
        ),
        tuner,
    )
    killed = running_trial_of(storage, tuner.pid).number
    tuner.send_signal(signal.SIGKILL)
    tuner.wait()

    rerun = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache_dir)},
    )
    assert rerun.returncode == 0, rerun.stderr
    assert_nothing_lost(storage, budget=3, killed=killed)
    shown = subprocess.run(
        autotune_cmd("show", "--study", "mnist-cpu"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "lost" in shown.stdout


def test_parallel_slots_on_sqlite(cli, tmp_path, fast_space):
    r = cli(
        "study",
        "--model",
        "mnist",
        "--trials",
        "4",
        "--jobs",
        "2",
        "--space",
        str(fast_space),
        *UNSEEDED_ARGS,
    )
    assert r.returncode == 0, r.stderr
    assert "database is locked" not in r.stderr
    trials = trials_of(f"sqlite:///{tmp_path / 'autotune.db'}")
    assert len(trials) == 4 and all(trial_status(t, ()) == "ok" for t in trials)
    records = [TrialRecord.of(t) for t in trials]
    owners = {r.owner["pid"] for r in records if r.owner is not None}
    assert len(owners) == 1  # one tuner process, two slots
    # Each slot gets its share of this host's cores, and the trial records it.
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for record in records:
        assert record.environment["threads"] == share
        assert record.machine["threads"] == share
    notes = [line for line in r.stderr.splitlines() if "--jobs > 1" in line]
    assert len(notes) == 1 and "not comparable with a lone run" in notes[0]


def test_two_hosts_on_postgresql_one_killed(tmp_path, fast_space, cache_dir, postgres_url):
    """Host A creates the study and is killed mid-trial; host B notices A's silent heartbeat,
    re-runs A's trial, and finishes the budget. As root, B runs as a container would: its own
    hostname and PID namespace, where A's pid means nothing (A's death shows only in its
    heartbeat). Otherwise B shares A's kernel and sees at once that A's pid is gone."""
    budget = 6
    a = spawn(
        autotune_cmd(
            "study",
            "--model",
            "mnist",
            "--trials",
            str(budget),
            "--storage",
            postgres_url,
            "--space",
            str(fast_space),
            "--heartbeat",
            "1",
            *UNSEEDED_ARGS,
        ),
        tmp_path,
        cache_dir,
    )
    wait_for(lambda: any(t.state.is_finished() for t in trials_of(postgres_url)), a)
    worker = autotune_cmd(
        "worker",
        "--study",
        "mnist-cpu",
        "--storage",
        postgres_url,
        "--heartbeat",
        "1",
        "--no-progress",
    )
    contained = os.geteuid() == 0 and shutil.which("unshare") is not None
    if contained:
        script = 'hostname autotune-host-b && exec "$@"'
        container = ["unshare", "--uts", "--pid", "--fork", "--mount-proc"]
        worker = [*container, "sh", "-c", script, "sh", *worker]
    b = spawn(worker, tmp_path, cache_dir)
    wait_for(lambda: running_trial_of(postgres_url, a.pid) is not None, a)
    killed = running_trial_of(postgres_url, a.pid).number
    a.send_signal(signal.SIGKILL)
    a.wait()

    b.wait(timeout=300)
    err = output_of(b)
    assert b.returncode == 0, err
    assert "joined study 'mnist-cpu'" in err
    assert_nothing_lost(postgres_url, budget, killed)
    trials = trials_of(postgres_url)
    lost = TrialRecord.of(trials[killed], retried_numbers(trials))
    assert lost.status == "lost"
    how = "no heartbeat" if contained else "died"
    assert how in lost.message, lost.message
    owners = [TrialRecord.of(t).owner for t in trials_of(postgres_url)]
    hosts = {owner["host"] for owner in owners if owner is not None}
    assert len(hosts) == (2 if contained else 1)
    # Host B says once that the study's CPU trials ran on two machines (its own hostname).
    warned = [line for line in err.splitlines() if "machines" in line]
    assert len(warned) == (1 if contained else 0), err
