"""Races and signals (issue 23): processes creating one new SQLite file at once, and a second
Ctrl-C right after the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from autotune.records import trial_status
from tests.conftest import ROOT, UNSEEDED_ARGS

# Each process waits for the same moment, then opens the storage and creates the study.
_OPEN_AT = """
import sys, time
from autotune.storage import open_storage
import optuna
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
storage = open_storage(sys.argv[1])
optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
"""


@pytest.mark.slow
def test_processes_creating_one_new_sqlite_file_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    start = time.time() + 4  # after every interpreter has started
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AT, url, str(start)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert optuna.get_all_study_names(url) == ["s"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_a_second_ctrl_c_right_after_the_first_leaves_no_trial_running(
    tmp_path, fast_space, cache_dir
):
    args = [
        *(sys.executable, "-m", "autotune", "study", "--model", "mnist", "--trials", "3"),
        *("--space", str(fast_space), *UNSEEDED_ARGS, "--measure-seconds", "3"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache_dir)}
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # as from a terminal (see test_study_e2e)
    )
    url = f"sqlite:///{tmp_path / 'autotune.db'}"

    def running() -> bool:
        try:
            trials = optuna.load_study(study_name="mnist-cpu", storage=url).get_trials()
        except Exception:  # not created yet
            return False
        return any(t.state.name == "RUNNING" and t.user_attrs.get("config") for t in trials)

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not running():
        time.sleep(0.2)
    assert proc.poll() is None, "the study ended before a trial could be interrupted"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.03)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    trials = optuna.load_study(study_name="mnist-cpu", storage=url).get_trials()
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    assert [trial_status(t) for t in trials].count("interrupted") == 1


# Each process waits for the same moment, then claims the study's confirmation pass; prints
# whether it got it, and stays alive (a live owner) until told to exit.
_CLAIM_AT = """
import sys, time
import optuna
from autotune.confirm_claim import claim_confirmation
study = optuna.load_study(study_name="s", storage=sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print("mine" if claim_confirmation(study, stale_s=600) is None else "other", flush=True)
sys.stdin.read()
"""


def test_one_tuner_of_many_runs_the_confirmation_pass(tmp_path):
    """Two `study` processes on one study both reached the confirmation pass at once: each
    ran it, 4 re-measurements with --confirm 1. The claim lets one run it; a tuner coming
    later leaves it to the live owner, and takes it over once the owner is gone."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="s", storage=url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def claimers(n: int, start: float) -> list[subprocess.Popen]:
        return [
            subprocess.Popen(
                [sys.executable, "-c", _CLAIM_AT, url, str(start)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]

    both = claimers(2, time.time() + 4)
    said = [p.stdout.readline().strip() for p in both]
    assert sorted(said) == ["mine", "other"]
    (late,) = claimers(1, 0)
    assert late.stdout.readline().strip() == "other"  # the owner still runs
    late.communicate("")
    for p in both:
        p.communicate("")  # the owner exits
    (after,) = claimers(1, 0)
    assert after.stdout.readline().strip() == "mine"
    after.communicate("")
