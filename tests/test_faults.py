"""Faults in the trial process never stop the study: each is injected for real (tests/fixtures/
faulty_studies.py), the study runs through the CLI, and the storage is checked after."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna
import pytest

from autotune.launch.runner import RunnerSettings, run_job
from autotune.records import TrialRecord
from autotune.wire import Status, TrialConfig, TrialJob

pytestmark = pytest.mark.slow

FAULTS = {
    # fault: (extra CLI args, Optuna state, status, message fragment, stderr fragment)
    "SEGFAULT": ([], "FAIL", "crash", "trial process killed by SIGSEGV", "Fatal Python error"),
    "HANGING": (["--timeout-per-trial", "15"], "FAIL", "timeout", "process group killed", ""),
    "NAN": ([], "COMPLETE", "nan", "NaN", ""),
    "GARBAGE": ([], "FAIL", "crash", "exited with code 0 and wrote no result", ""),
    "MEMORY_HOG": (["--memory-limit", "2G"], "PRUNED", "oom", "", "can't allocate memory"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_recorded_and_study_goes_on(cli, tmp_path, fault):
    extra, state, status, message, stderr = FAULTS[fault]
    space = tmp_path / "bf16.toml"  # one config, in bf16: every trial meets the fault
    space.write_text(
        "batch_size = {min = 64, max = 64}\noptimization_level = [0]\n"
        'activation_dtype = ["bf16"]\nchannels_last = [false]\nstreams = [1]\n'
        '[weight_dtypes]\n"*" = ["bf16"]\n'
    )
    name = fault.lower()
    r = cli(
        "study",
        "--model",
        f"tests.fixtures.faulty_studies:{fault}",
        "--study-name",
        name,
        "--trials",
        "2",
        "--space",
        str(space),
        "--measure-seconds",
        "0.2",
        "--eval-limit",
        "500",
        "--no-progress",
        *extra,
    )
    assert r.returncode == 0, r.stderr
    first, second = optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    ).get_trials()
    assert first.state.name == state
    record = TrialRecord.of(first)
    assert record.status == status
    assert message in record.message
    assert stderr in (record.stderr_tail or "")
    if status == "nan":
        assert first.constraints["metric_drop"] > 0  # measured, never feasible
    # The study went on: the same config again is recorded from the first, not re-run.
    assert second.state.name == state and TrialRecord.of(second).duplicate_of == 0


def test_a_model_broken_before_any_trial_is_one_line(cli, tmp_path):
    """The first fp32 pass (the describe job, before the reference and any trial) fails."""
    r = cli(
        "study",
        "--model",
        "tests.fixtures.faulty_studies:RAISING",
        "--trials",
        "1",
        "--no-progress",
    )
    assert r.returncode == 2
    assert "cannot run on its own inputs" in r.stderr and "Traceback" not in r.stderr
    assert "faulty_studies:RAISING" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "broken on purpose" in r.stderr


def test_runner_keeps_reason_and_stderr(tmp_path):
    cfg = TrialConfig("tests.fixtures.faulty_studies:RAISING", "cpu", 64)
    result = run_job(TrialJob(cfg, reference_path=str(tmp_path / "none.pt")), RunnerSettings())
    assert result.status is Status.CRASH
    assert "broken on purpose" in result.message
    assert "Traceback" in result.stderr_tail


def test_timeout_kills_the_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    os.environ["HANG_PID_FILE"] = str(pid_file)
    try:
        cfg = TrialConfig(
            "tests.fixtures.faulty_studies:HANGING", "cpu", 64, activation_dtype="bf16"
        )
        start = time.monotonic()
        result = run_job(TrialJob(cfg), RunnerSettings(timeout_s=10))
    finally:
        del os.environ["HANG_PID_FILE"]
    assert result.status is Status.TIMEOUT
    assert time.monotonic() - start < 30
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    assert not _alive(grandchild), "the trial process's child survived the timeout"


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a reaper (containers' pid 1
    may not reap orphans)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]
