"""The storage layout of a trial (autotune.records), on a real SQLite storage: constraints
visible to both Optuna 5 and optuna-dashboard 0.21, raw block times out of the user attrs,
and studies written before the move still read."""

from __future__ import annotations

import optuna
import pytest

from autotune.analysis import trial_rows
from autotune.records import (
    BLOCK_TIMES_ATTR,
    block_times,
    named_constraints,
    set_block_times,
    set_constraints,
)


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"]
    )


def test_constraints_by_name_and_as_the_list_the_dashboard_reads(study):
    trial = study.ask()
    set_constraints(trial, {"accuracy_drop": -0.25, "agreement": 0.5})
    study.tell(trial, [100.0, 0.25])
    frozen = study.trials[0]
    assert frozen.system_attrs["constraints:accuracy_drop"] == -0.25  # Optuna 5's own form
    assert frozen.system_attrs["constraints"] == [-0.25, 0.5]  # optuna-dashboard's
    assert named_constraints(frozen) == {"accuracy_drop": -0.25, "agreement": 0.5}
    assert frozen.user_attrs["constraints"] == {"accuracy_drop": -0.25, "agreement": 0.5}
    assert frozen.user_attrs["feasible"] is False
    # Optuna merges both forms; feasibility is the same from either.
    assert sorted(frozen.constraints.values()) == [-0.25, -0.25, 0.5, 0.5]
    assert study.best_trials == []  # Optuna sees the violated constraint too
    assert trial_rows(study)[0].feasible is False


def test_feasible_trial(study):
    trial = study.ask()
    set_constraints(trial, {"accuracy_drop": -0.1})
    study.tell(trial, [100.0, 0.4])
    assert study.trials[0].user_attrs["feasible"] is True
    assert [t.number for t in study.best_trials] == [0]


def test_only_the_unnamed_list(study):
    """A study written by another tool (Optuna's constraints_func path) has the list only."""
    study.add_trial(
        optuna.trial.create_trial(values=[1.0, 0.0], system_attrs={"constraints": [0.3, -1.0]})
    )
    assert named_constraints(study.trials[0]) == {"0": 0.3, "1": -1.0}


def test_block_times_live_in_a_system_attr(study):
    trial = study.ask()
    set_block_times(trial, [0.01, 0.011, 0.012], iters_per_block=7)
    study.tell(trial, [1.0, 0.0])
    frozen = study.trials[0]
    assert "block_times" not in frozen.user_attrs
    assert frozen.user_attrs["blocks"] == 3 and frozen.user_attrs["iters_per_block"] == 7
    assert frozen.system_attrs[BLOCK_TIMES_ATTR] == [0.01, 0.011, 0.012]
    assert block_times(frozen) == [0.01, 0.011, 0.012]


def test_block_times_of_an_older_study(study):
    study.add_trial(
        optuna.trial.create_trial(
            values=[1.0, 0.0], user_attrs={"block_times": [0.5, 0.6], "iters_per_block": 2}
        )
    )
    assert block_times(study.trials[0]) == [0.5, 0.6]
