"""The search in a real study: autotune's strategy drives the trials, a clearly losing
trial stops after warm-up, and timing ends early once its blocks agree."""

from __future__ import annotations

import optuna
import pytest

from autotune.child.trial import _stable
from autotune.records import TrialRecord
from tests.conftest import FAST_ARGS

pytestmark = pytest.mark.slow

ONE_POINT = """\
batch_size = [64]
optimization_level = [0]
"""


def load(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'autotune.db'}")


def slow_study(cli, tmp_path, *extra):
    space = tmp_path / "one.toml"
    space.write_text(ONE_POINT)
    model = "tests.fixtures.faulty_studies:SLOW_BF16"
    r = cli("study", "--model", model, "--trials", "2", "--space", str(space), *FAST_ARGS, *extra)
    assert r.returncode == 0, r.stderr
    return [t for t in load(tmp_path, f"{model}-cpu").get_trials() if t.state.is_finished()]


def test_a_clearly_losing_trial_stops_after_warmup(cli, tmp_path):
    # autotune's strategy starts in fp32 and flips the activation dtype next; bf16 costs
    # this study 250 ms a call, far under a third of fp32's throughput.
    first, second = slow_study(cli, tmp_path, "--stop-slower", "3")
    fast, slow_record = TrialRecord.of(first), TrialRecord.of(second)
    assert first.params["activation_dtype"] == "fp32" and fast.status == "ok"
    assert second.params["activation_dtype"] == "bf16"
    assert second.state == optuna.trial.TrialState.PRUNED
    assert slow_record.status == "slow"
    assert "stopped after warm-up" in slow_record.message
    timings = slow_record.timings
    assert "measure_s" not in timings and "eval_s" not in timings  # neither timed nor evaluated
    slow = slow_record.metrics["throughput_samples_per_s"]
    assert 0 < slow < fast.metrics["throughput_samples_per_s"] / 3


def test_stop_slower_zero_measures_every_trial_in_full(cli, tmp_path):
    _, second = slow_study(cli, tmp_path, "--stop-slower", "0")
    record = TrialRecord.of(second)
    assert record.status == "ok" and "eval_s" in record.timings


@pytest.mark.parametrize("value", ["1", "0.5", "-2"])
def test_stop_slower_must_be_off_or_above_one(cli, value):
    r = cli("study", "--model", "mnist", "--trials", "1", *FAST_ARGS, "--stop-slower", value)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"autotune: --stop-slower must be 0 (off) or above 1, not {float(value):g}"
    ]


def test_timing_stops_once_blocks_agree():
    assert _stable([0.1, 0.1, 0.1, 0.1, 0.1], iters=10, batch_size=64)
    assert not _stable([0.1, 0.2, 0.1, 0.3, 0.1], iters=10, batch_size=64)
