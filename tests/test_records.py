"""The storage layout of a study and its trials (autotune.records), on a real SQLite
storage: typed records that round-trip, constraints visible to both Optuna 5 and
optuna-dashboard 0.21, raw block times out of the user attrs, studies written by earlier
layouts still read, and no other module touching Optuna user attributes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from autotune.analysis import trial_rows
from autotune.records import (
    BLOCK_TIMES_ATTR,
    FROM_SENSITIVITY,
    LEGACY_CONSTRAINTS_ATTR,
    SCHEMA_VERSION,
    STUDY_ATTR,
    SensitivityRecord,
    StudyRecord,
    TrialRecord,
    add_confirmation,
    block_times,
    enqueue,
    finished_trial,
    named_constraints,
    read_sensitivity,
    read_study,
    retried_numbers,
    set_block_times,
    set_constraints,
    trial_status,
    write_sensitivity,
    write_study,
    write_trial,
)
from autotune.tables import config_label
from autotune.wire import TrialConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"]
    )


def test_constraints_by_name_and_as_the_list_the_dashboard_reads(study):
    trial = study.ask()
    set_constraints(trial, {"metric_drop": -0.25, "agreement": 0.5})
    study.tell(trial, [100.0, 0.25])
    frozen = study.trials[0]
    assert frozen.system_attrs["constraints:metric_drop"] == -0.25  # Optuna 5's own form
    assert frozen.system_attrs["constraints"] == [-0.25, 0.5]  # optuna-dashboard's
    assert named_constraints(frozen) == {"metric_drop": -0.25, "agreement": 0.5}
    record = TrialRecord.of(frozen)
    assert record.constraints == {"metric_drop": -0.25, "agreement": 0.5}
    assert record.feasible is False
    # Optuna merges both forms; feasibility is the same from either.
    assert sorted(frozen.constraints.values()) == [-0.25, -0.25, 0.5, 0.5]
    assert study.best_trials == []  # Optuna sees the violated constraint too
    assert trial_rows(study)[0].feasible is False


def test_feasible_trial(study):
    trial = study.ask()
    set_constraints(trial, {"metric_drop": -0.1})
    study.tell(trial, [100.0, 0.4])
    assert TrialRecord.of(study.trials[0]).feasible is True
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
    assert "block_times" not in frozen.user_attrs  # raw: the point is what the dashboard lists
    record = TrialRecord.of(frozen)
    assert record.blocks == 3 and record.iters_per_block == 7
    assert frozen.system_attrs[BLOCK_TIMES_ATTR] == [0.01, 0.011, 0.012]
    assert block_times(frozen) == [0.01, 0.011, 0.012]


def test_a_finished_trial_is_laid_out_as_the_tuner_lays_out_its_own(study):
    record = TrialRecord(status="ok", metrics={"accuracy": 0.9}, iters_per_block=2)
    study.add_trial(
        finished_trial(
            record,
            values=[1.0, 0.0],
            constraints={"metric_drop": -0.5},
            block_times=[0.5, 0.6],
        )
    )
    pruned = finished_trial(TrialRecord(status="oom"), state=optuna.trial.TrialState.PRUNED)
    study.add_trial(pruned)
    built, oom = study.trials
    assert built.state.name == "COMPLETE" and built.values == [1.0, 0.0]
    assert TrialRecord.of(built) == TrialRecord(
        status="ok",
        metrics={"accuracy": 0.9},
        constraints={"metric_drop": -0.5},
        feasible=True,
        blocks=2,
        iters_per_block=2,
    )
    assert named_constraints(built) == {"metric_drop": -0.5}
    assert built.system_attrs[LEGACY_CONSTRAINTS_ATTR] == [-0.5]  # what the dashboard reads
    assert block_times(built) == [0.5, 0.6]
    assert "block_times" not in built.user_attrs  # raw: out of what the dashboard lists
    assert oom.state.name == "PRUNED" and TrialRecord.of(oom).status == "oom"
    assert [r.feasible for r in trial_rows(study)] == [True, False]


# --- typed records ----------------------------------------------------------------------------


def test_study_record_round_trips_and_stores_each_option_once(study):
    assert read_study(study) is None
    options = {"model": "mnist", "backend": "cpu", "max_accuracy_drop": 0.5, "min_agreement": 99}
    record = StudyRecord(options={**options, "space_signature": "abc"}, trials_budget=7)
    write_study(study, record)
    stored = study.user_attrs[STUDY_ATTR]  # raw: the point is the stored layout
    assert stored["schema"] == SCHEMA_VERSION
    assert not set(options) & set(stored)  # only under "options"
    assert "reference_metric" not in stored  # no reference measured yet
    back = read_study(study)
    assert back == record and back.made_by_tuner
    assert (back.model, back.backend, back.max_accuracy_drop, back.min_agreement) == (
        "mnist",
        "cpu",
        0.5,
        99,
    )
    add_confirmation(study, 3, {"iters_per_block": 1, "block_times": [0.1]})
    add_confirmation(study, 3, {"status": "crash", "message": "x"})
    assert [len(v) for v in read_study(study).confirmed.values()] == [2]


def test_trial_record_fields_and_their_stored_names(study):
    enqueue(study, {}, starting_point=FROM_SENSITIVITY)
    enqueue(study, {}, retry_of=0)
    first, second = study.ask(), study.ask()
    # The stored name optuna-dashboard shows is the one studies were written with (raw: the
    # point is the stored name).
    assert first.user_attrs == {"seeded": "sensitivity"} and second.user_attrs == {"retry_of": 0}
    write_trial(first, status="ok", metrics={"accuracy": 0.9}, owner={"pid": 1})
    with pytest.raises(TypeError, match="not a TrialRecord field: bogus"):
        write_trial(first, bogus=1)
    study.tell(first, [1.0, 0.0])
    record = TrialRecord.of(study.trials[first.number])
    assert record.starting_point == FROM_SENSITIVITY and record.status == "ok"
    assert record.metrics == {"accuracy": 0.9} and record.timings is None
    assert TrialRecord.from_attrs(record.to_attrs()) == record


def test_a_failed_trial_with_a_retry_reads_as_lost(study):
    """Another tuner failed it (stale heartbeat) and queued its config again: whatever its
    owner wrote, it reads as lost, derived from the retry; the trial is not written to."""
    owner = {"pid": 7, "host": "box-a"}
    lost, interrupted, crashed = study.ask(), study.ask(), study.ask()
    write_trial(lost, status="ok", metrics={"accuracy": 0.9}, owner=owner)
    write_trial(interrupted, status="interrupted", message="Ctrl-C")
    write_trial(crashed, status="crash", message="SIGSEGV")
    for trial in (lost, interrupted, crashed):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    enqueue(study, {}, retry_of=lost.number)
    enqueue(study, {}, retry_of=interrupted.number)
    fresh = optuna.load_study(study_name=study.study_name, storage=study._storage._backend)
    trials = fresh.get_trials()
    retried = retried_numbers(trials)
    assert retried == {lost.number, interrupted.number}
    assert trials[lost.number].user_attrs["status"] == "ok"  # as its owner left it
    again = TrialRecord.of(trials[lost.number], retried)
    assert (again.status, again.metrics) == ("lost", {"accuracy": 0.9})
    assert "no heartbeat from its tuner (pid 7 on box-a)" in again.message
    assert trial_status(trials[lost.number], retried) == "lost"
    assert TrialRecord.of(trials[lost.number]).status == "ok"  # without the retries
    # Interrupted by its own tuner, or failed without a retry: as stored.
    assert trial_status(trials[interrupted.number], retried) == "interrupted"
    assert TrialRecord.of(trials[crashed.number], retried).message == "SIGSEGV"
    statuses = {r.number: r.status for r in trial_rows(fresh)}
    assert [statuses[n] for n in (0, 1, 2)] == ["lost", "interrupted", "crash"]


def test_sensitivity_record_round_trips(study):
    assert read_sensitivity(study) is None
    record = SensitivityRecord(rows=[{"weight": "fc1.weight", "dtype": "bfp_bf8"}], eval_limit=9)
    write_sensitivity(study, record)
    assert read_sensitivity(study) == record


# --- older layouts (autotune.records_legacy) --------------------------------------------------


def test_block_times_of_an_older_study(study):
    study.add_trial(
        optuna.trial.create_trial(  # raw: the old layout (block times among the user attrs)
            values=[1.0, 0.0], user_attrs={"block_times": [0.5, 0.6], "iters_per_block": 2}
        )
    )
    assert block_times(study.trials[0]) == [0.5, 0.6]


def test_study_record_of_the_earlier_layout_reads(study):
    """Schema 1 stored the identity options twice; a study made by another tool may hold
    only the top-level keys."""
    study.set_user_attr(  # raw: the point is that the old layout still reads
        STUDY_ATTR,
        {
            "options": {"model": "mnist", "backend": "cpu", "space_signature": "s"},
            "model": "mnist",
            "backend": "cpu",
            "max_accuracy_drop": 0.3,
            "trials_budget": 4,
            "reference_metric": 0.98,
            "reference_fingerprint": "f",
            "seed_recipe": {"batch_size": 64, "extras": {"channels_last": True}},  # earlier names
            "an_unknown_key": 1,
        },
    )
    record = read_study(study)
    assert record.schema == 1 and record.max_accuracy_drop == 0.3 and record.trials_budget == 4
    assert record.reference_metric == 0.98 and record.made_by_tuner
    assert record.reference_recipe == {"batch_size": 64, "knobs": {"channels_last": True}}
    study.set_user_attr(STUDY_ATTR, {"model": "m", "backend": "cuda"})  # raw, as above
    record = read_study(study)
    assert (record.model, record.backend, record.made_by_tuner) == ("m", "cuda", False)


def test_trial_record_of_the_earlier_layout_reads(study):
    """Configs stored before the rename call the backend's knobs "extras"."""
    config = TrialConfig("mnist", "cpu", 8, knobs=(("pinned", True),))
    old = {k: v for k, v in config.to_dict().items() if k != "knobs"} | {"extras": {"pinned": True}}
    study.add_trial(finished_trial(TrialRecord(status="ok", config=old), values=[1.0, 0.0]))
    stored = TrialRecord.of(study.trials[0]).config
    assert stored == config.to_dict() and TrialConfig.from_dict(stored) == config
    assert config_label(stored) == "bs8 O0 fp32 pinned"


# --- the one home of the layout ---------------------------------------------------------------


def test_only_records_touches_user_attrs():
    """The one home of the stored layout: no other module reads or writes user attrs."""
    found = subprocess.run(
        ["git", "grep", "-l", "user_attr", "--", "autotune", "bench", "studies", "search_spaces"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if found.returncode not in (0, 1):  # not a git checkout (an sdist): nothing to check
        pytest.skip(found.stderr.strip())
    assert found.stdout.split() == ["autotune/records.py"]
