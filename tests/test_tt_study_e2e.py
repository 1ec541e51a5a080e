"""`autotune study --backend tt` end to end through the CLI, with `--trial-python` pointing
at an interpreter that has the tt-xla stand-in on its path (no Tenstorrent card here: the
stand-in runs the model on CPU and records the calls), then every export format."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import optuna
import pytest

from autotune.records import TrialRecord
from tests.test_tt_backend import STANDIN

pytestmark = pytest.mark.slow


@pytest.fixture
def tt_python(tmp_path: Path) -> Path:
    """A 'Tenstorrent environment' interpreter: this Python plus the stand-in packages."""
    wrapper = tmp_path / "tt-python"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{STANDIN}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def test_tt_study_and_all_exports(cli, tmp_path, tt_python):
    space = tmp_path / "tt.toml"
    space.write_text(
        "batch_size = {min = 16, max = 32}\noptimization_level = [0]\n"
        'experimental_weight_dtype = ["none"]\n'
    )
    log = tmp_path / "calls.jsonl"
    r = cli(
        "study",
        "--model",
        "mnist",
        "--backend",
        "tt",
        "--trial-python",
        str(tt_python),
        "--trials",
        "3",
        "--devices",
        "0,1",
        "--space",
        str(space),
        "--measure-seconds",
        "0.2",
        "--eval-limit",
        "500",
        "--no-progress",
        "--seed",
        "0",
        "--no-seed",
        env={"TT_STANDIN_LOG": str(log)},
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(
        study_name="mnist-tt", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    trials = study.get_trials()
    assert len(trials) == 3
    records = [TrialRecord.of(t) for t in trials]
    assert all(r.status == "ok" for r in records), records
    assert records[0].environment["device"].startswith("TT stand-in")
    # --devices 0,1: two trials at once, each trial process restricted to its own chip.
    seen = {r.environment["env"].get("TT_METAL_VISIBLE_DEVICES") for r in records}
    assert seen == {"0", "1"}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(c["call"] == "xr.set_device_type" for c in calls) >= 3  # one per trial process

    r = cli("export", "--study", "mnist-tt", "-o", "best.json")
    assert r.returncode == 0, r.stderr
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["backend"] == "tt" and best["activation_dtype"] == "bf16"
    assert set(best["compile_options"]) >= {"optimization_level", "enable_trace"}

    r = cli("export", "--study", "mnist-tt", "--format", "tt-mixed-precision", "-o", "mp.json")
    assert r.returncode == 0, r.stderr
    mixed = json.loads((tmp_path / "mp.json").read_text())
    assert mixed == best["weight_dtype_overrides"]
    assert set(mixed) <= {"fc1.weight", "fc2.weight"}

    r = cli("export", "--study", "mnist-tt", "--format", "script", "-o", "run_best.py")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "run_best.py"
    compile(script.read_text(), str(script), "exec")
    import subprocess

    env = {**os.environ, "PYTHONPATH": f"{STANDIN}:{Path(__file__).resolve().parents[1]}"}
    run = subprocess.run(
        [sys.executable, str(script), "4"], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "samples" in run.stdout
