"""A latency budget and the latency objective end to end: the real CLI, real trial
processes, the real MNIST CNN, SQLite. The budget comes from latencies measured here, not
from a constant: a budget that binds on whatever machine runs the test."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from autotune.records import TrialRecord, named_constraints
from tests.conftest import FAST_ARGS

pytestmark = pytest.mark.slow

SPACE = """\
batch_size = {min = %d, max = %d}
optimization_level = [0]
activation_dtype = ["fp32"]
channels_last = [false]
streams = [1]
[weight_dtypes]
"*" = ["fp32"]
"""
ARGS = (*FAST_ARGS, "--no-starting-points", "--eval-limit", "300")


def space(tmp_path, lo: int, hi: int):
    path = tmp_path / f"space_{lo}_{hi}.toml"
    path.write_text(SPACE % (lo, hi))
    return str(path)


def trials_of(tmp_path, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'autotune.db'}")
    return [t for t in study.get_trials() if t.state.is_finished()]


def test_budget_binds_and_the_pick_fits_it(cli, tmp_path):
    # What batch 16 and batch 1024 take here; the budget lies between them (their geometric
    # mean: ~8x either way, far beyond this machine's noise).
    latency = {}
    for batch in (16, 1024):
        name = f"probe{batch}"
        r = cli("study", "--model", "mnist", "--trials", "1", "--study", name,
                "--space", space(tmp_path, batch, batch), "--confirm", "0", *ARGS)  # fmt: skip
        assert r.returncode == 0, r.stderr
        (t,) = trials_of(tmp_path, name)
        latency[batch] = TrialRecord.of(t).metrics["latency_ms_p95"]
    lo, hi = 16, 1024
    assert latency[hi] >= 8 * latency[lo], latency
    budget = math.sqrt(latency[lo] * latency[hi])

    r = cli("study", "--model", "mnist", "--trials", "12", "--space", space(tmp_path, 16, 1024),
            "--max-latency-ms", f"{budget:.4g}", *ARGS)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"p95 latency <= {float(f'{budget:.4g}'):g} ms per batch" in r.stderr
    trials = trials_of(tmp_path, "mnist-cpu")
    over = []  # (trial number, batch) of every trial that broke the budget
    limit = float(f"{budget:.4g}")
    for t in sorted(trials, key=lambda t: t.number):
        record = TrialRecord.of(t)
        assert record.duplicate_of is None, "no copy trials in the budget"
        batch = record.config["batch_size"]
        # One config family (level 0, fp32): nothing at or above a batch that broke it.
        assert all(batch < b for _, b in over), (t.number, batch, over)
        if t.state.name == "COMPLETE":
            excess = named_constraints(t)["latency"]
            assert excess == pytest.approx(record.metrics["latency_ms_p95"] - limit)
            if excess > 0:
                over.append((t.number, batch))
        elif record.status == "slow":
            assert "over the latency budget" in record.message
            over.append((t.number, batch))
    assert over, "the budget binds: some batch broke it"
    first_over = min(b for _, b in over)

    r = cli("export", "--study", "mnist-cpu", "-o", "best.json")
    assert r.returncode == 0, r.stderr
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["constraint"]["max_latency_ms"] == float(f"{budget:.4g}")
    assert exported["batch_size"] < first_over
    assert exported["metrics"]["latency_ms_p95"] <= budget
    assert exported["protocol"]["max_latency_ms"] == float(f"{budget:.4g}")
    # An independent re-measurement of the pick stays within the budget, up to noise.
    r = cli("verify", "best.json", "--rounds", "1", "--max-slowdown", "0.5", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    rounds = json.loads(r.stdout)["rounds"]
    assert rounds[0]["latency_ms"] <= 1.5 * budget


def test_latency_objective_picks_a_small_batch(cli, tmp_path):
    r = cli("study", "--model", "mnist", "--trials", "8", "--space", space(tmp_path, 1, 256),
            "--objective", "latency", *ARGS)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "pick (the lowest p95 latency)" in r.stdout
    r = cli("export", "--study", "mnist-cpu", "-o", "best.json")
    assert r.returncode == 0, r.stderr
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["objective"]["kind"] == "latency"
    assert exported["batch_size"] <= 4, exported["decision"]
    study = optuna.load_study(
        study_name="mnist-cpu", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names[0] == "latency p95 [ms per batch]"
