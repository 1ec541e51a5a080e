"""The storage going away under a study: real SQLite locks and files, a real PostgreSQL server
stopped and started; retries, the one line when they run out, measurements kept on disk and
taken in by the next run."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest

from autotune import defaults
from autotune.outcome import Scoring
from autotune.pending import Pending, take_in
from autotune.records import TrialRecord, write_trial
from autotune.resilient_storage import StorageGone, StorageUnavailable
from autotune.storage import open_storage
from autotune.wire import Status, TrialResult
from tests.conftest import UNSEEDED_ARGS
from tests.test_distributed import autotune_cmd, output_of, spawn, trials_of, wait_for


def _study(url: str, retry_s: float) -> optuna.Study:
    storage = open_storage(url, retry_s=retry_s)
    return optuna.create_study(study_name="s", storage=storage, directions=["maximize"])


def _hold_write_lock(db: Path, seconds: float) -> threading.Thread:
    """Another connection holds SQLite's write lock (BEGIN EXCLUSIVE) for `seconds`."""
    held = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


@pytest.mark.slow
def test_sqlite_lock_held_longer_than_its_busy_timeout_is_waited_out(tmp_path, capfd):
    db = tmp_path / "s.db"
    study = _study(f"sqlite:///{db}", retry_s=60)
    hold = defaults.SQLITE_BUSY_TIMEOUT + 4
    thread = _hold_write_lock(db, hold)
    start = time.monotonic()
    study.set_user_attr("written", 1)  # waits for the lock, past SQLite's own timeout
    waited = time.monotonic() - start
    thread.join()
    assert waited > defaults.SQLITE_BUSY_TIMEOUT
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{db}").user_attrs == {"written": 1}
    err = capfd.readouterr().err
    assert "did not answer (database is locked); retrying for up to 60 s" in err
    assert "answers again" in err


def test_a_retry_that_runs_out_says_so_in_one_line(tmp_path):
    db = tmp_path / "s.db"
    study = _study(f"sqlite:///{db}", retry_s=0)
    thread = _hold_write_lock(db, defaults.SQLITE_BUSY_TIMEOUT + 2)
    with pytest.raises(StorageUnavailable) as caught:
        study.set_user_attr("written", 1)
    thread.join()
    message = str(caught.value)
    assert "\n" not in message and "did not answer for 0 s" in message
    assert "database is locked" in message


def test_errors_that_time_does_not_mend_are_not_retried(tmp_path):
    """A database file with random bytes in the middle fails at once, not after the retry
    time."""
    db = tmp_path / "s.db"
    study = _study(f"sqlite:///{db}", retry_s=60)
    for i in range(200):
        study.set_user_attr(f"k{i}", "x" * 200)
    study._storage._backend.engine.dispose()
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    with open(db, "r+b") as f:
        f.seek(db.stat().st_size // 2)
        f.write(bytes(range(256)) * 64)
    start = time.monotonic()
    with pytest.raises(Exception, match="malformed") as caught:
        storage = open_storage(f"sqlite:///{db}", retry_s=60)
        optuna.load_study(study_name="s", storage=storage).user_attrs  # noqa: B018 - a read
    assert not isinstance(caught.value, StorageUnavailable)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_or_replaced_sqlite_file_is_noticed(tmp_path, how):
    db = tmp_path / "s.db"
    study = _study(f"sqlite:///{db}", retry_s=60)
    study.set_user_attr("before", 1)
    db.unlink()
    if how == "replaced":
        _study(f"sqlite:///{db}", retry_s=0)  # a new, empty database under the same name
    with pytest.raises(StorageGone, match="was deleted or replaced while the study ran"):
        study.set_user_attr("after", 1)


def _measured(tp: float = 1000.0) -> TrialResult:
    return TrialResult(
        Status.OK,
        metrics={"throughput_samples_per_s": tp, "metric_drop": 0.1, "accuracy": 0.98},
        block_times=[0.1, 0.1, 0.1, 0.1, 0.1],
        iters_per_block=3,
    )


def test_a_kept_measurement_is_stored_by_the_next_run(tmp_path):
    """Into its trial while that is still running; as a finished trial of its own where
    another tuner failed the trial meanwhile. Nothing measured is lost either way."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url)
    study = optuna.create_study(
        study_name="s", storage=storage, directions=["maximize", "minimize"]
    )
    dist = optuna.distributions.CategoricalDistribution([1, 2])
    running, failed = study.ask({"x": dist}), study.ask({"x": dist})
    for trial in (running, failed):
        write_trial(trial, config={"batch_size": 64}, config_key=f"key{trial.number}")
    pending = Pending(tmp_path / "cache", url, "s")
    kept = [
        pending.keep(t.number, f"key{t.number}", _measured(1000.0 + t.number))
        for t in (running, failed)
    ]
    study.tell(failed, state=optuna.trial.TrialState.FAIL)  # as a stale-heartbeat check does
    said: list[str] = []
    assert take_in(study, pending, Scoring(max_metric_drop=0.5), said.append) == 2
    assert not any(path.exists() for path in kept) and len(said) == 2
    trials = study.get_trials()
    assert trials[running.number].state.name == "COMPLETE"
    assert trials[running.number].values == [1000.0, 0.1]
    late = trials[-1]
    assert late.number == 2 and late.state.name == "COMPLETE" and late.values == [1001.0, 0.1]
    record = TrialRecord.of(late)
    assert record.config_key == "key1" and "stored late" in record.message
    assert record.feasible is True and record.blocks == 5


def test_a_kept_measurement_of_another_study_is_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    trial = study.ask()
    write_trial(trial, config_key="this")
    pending = Pending(tmp_path / "cache", url, "s")
    path = pending.keep(trial.number, "another", _measured())
    assert take_in(study, pending, Scoring(max_metric_drop=0.5), print) == 0
    assert path.exists() and json.loads(path.read_text())["config_key"] == "another"


@pytest.mark.slow
def test_study_and_worker_ride_out_a_postgresql_restart(
    tmp_path, fast_space, cache_dir, postgres_server
):
    """The server stops for 30 s mid-study (connections cut) and starts again: study and
    worker wait, carry on, and the budget ends exact with no trial lost or re-run."""
    budget = 6
    url = postgres_server.url
    common = ("--storage", url, "--heartbeat", "1")
    study = spawn(
        autotune_cmd(
            "study",
            "--model",
            "mnist",
            "--trials",
            str(budget),
            "--space",
            str(fast_space),
            *common,
            *UNSEEDED_ARGS,
        ),
        tmp_path,
        cache_dir,
    )
    wait_for(lambda: any(t.state.is_finished() for t in trials_of(url)), study)
    worker = spawn(
        autotune_cmd("worker", "--study", "mnist-cpu", *common, "--no-progress"),
        tmp_path,
        cache_dir,
    )
    running = lambda: [t for t in trials_of(url) if t.state.name == "RUNNING"]  # noqa: E731
    wait_for(lambda: len(running()) == 2, study)  # each measuring a trial
    postgres_server.stop()
    time.sleep(30)
    postgres_server.start()
    study.wait(timeout=300)
    worker.wait(timeout=300)
    for proc in (study, worker):
        err = output_of(proc)
        assert proc.returncode == 0, err
        assert "did not answer" in err and "answers again" in err, err
        assert "Traceback" not in err
    trials = trials_of(url)
    statuses = [TrialRecord.of(t).status for t in trials]
    assert all(t.state.is_finished() for t in trials), statuses
    assert sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED")) == budget
    assert not {"lost", "interrupted"} & set(statuses), statuses
    # Two hosts asking at once for the last unit may leave a surplus trial, outage or not.
    assert len(trials) == budget + statuses.count("surplus"), statuses
    assert not list((cache_dir / "autotune" / "pending").glob("*/*.json"))


@pytest.mark.slow
def test_a_tuner_that_gives_up_keeps_the_measurement_and_the_next_run_stores_it(
    tmp_path, fast_space, cache_dir
):
    """The SQLite file is locked by another program past the retry time while a trial is
    measured: the tuner stops in one line naming the file that holds the measurement; the
    same command run again stores it, and the budget ends exact."""
    budget = 3
    db = tmp_path / "autotune.db"
    url = f"sqlite:///{db}"
    cmd = autotune_cmd(
        "study", "--model", "mnist", "--trials", str(budget), "--space", str(fast_space),
        "--storage-retry-seconds", "1", *UNSEEDED_ARGS, "--measure-seconds", "2",
    )  # fmt: skip
    first = spawn(cmd, tmp_path, cache_dir)

    def measuring() -> list[optuna.trial.FrozenTrial]:
        return [
            t for t in trials_of(url) if t.state.name == "RUNNING" and t.user_attrs.get("config")
        ]

    wait_for(lambda: bool(measuring()), first)
    (held,) = measuring()
    lock = _hold_write_lock(db, defaults.SQLITE_BUSY_TIMEOUT + 25)
    first.wait(timeout=120)
    lock.join()
    err = output_of(first)
    assert first.returncode == 2, err
    (line,) = [x for x in err.splitlines() if "did not answer for 1 s" in x]
    kept = re.search(
        rf"trial {held.number}'s measurement is in (\S+); the next run stores it", line
    )
    assert kept is not None, line
    assert Path(kept.group(1)).exists() and "Traceback" not in err

    second = spawn(cmd, tmp_path, cache_dir)
    second.wait(timeout=300)
    err = output_of(second)
    assert second.returncode == 0, err
    assert f"stored trial {held.number}'s measurement" in err
    assert not Path(kept.group(1)).exists()
    trials = trials_of(url)
    stored = trials[held.number]
    assert stored.state.name == "COMPLETE" and TrialRecord.of(stored).status == "ok"
    assert sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED")) == budget


@pytest.mark.slow
def test_deleting_the_sqlite_file_mid_study_stops_it_in_one_line(tmp_path, fast_space, cache_dir):
    """It used to exit 0 with a Pareto set, the file gone and every trial with it."""
    db = tmp_path / "autotune.db"
    url = f"sqlite:///{db}"
    cmd = autotune_cmd(
        "study", "--model", "mnist", "--trials", "6", "--space", str(fast_space), *UNSEEDED_ARGS
    )  # fmt: skip
    proc = spawn(cmd, tmp_path, cache_dir)
    wait_for(lambda: any(t.state.is_finished() for t in trials_of(url)), proc)
    db.unlink()
    proc.wait(timeout=120)
    err = output_of(proc)
    assert proc.returncode == 2, err
    assert "was deleted or replaced while the study ran; stopped" in err
    assert "Traceback" not in err
