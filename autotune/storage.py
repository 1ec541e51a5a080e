"""Opening the study storage (an Optuna RDB storage over SQLAlchemy)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.errors import UsageError

if TYPE_CHECKING:
    import optuna

DEFAULT_STORAGE = "sqlite:///autotune.db"
STUDY_ATTR = "autotune"  # our study-level metadata lives under one prefixed user attr


def open_storage(url: str, heartbeat_s: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage. With `heartbeat_s`, running trials carry a heartbeat and a
    trial whose heartbeat stops for 3 intervals is failed and re-queued by any tuner."""
    import warnings

    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own messages say what matters
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        # Wait for a busy writer instead of failing with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": 60}
        _check_sqlite_path(url)
    heartbeat = {}
    if heartbeat_s:
        heartbeat = {
            "heartbeat_interval": heartbeat_s,
            "grace_period": 3 * heartbeat_s,
            "heartbeat_stale_trial_callback": _retry_lost_trial,
        }
    try:
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, **heartbeat
                    )
                break
            except sqlalchemy.exc.IntegrityError:
                # Two processes created the schema of a new database at once (hosts starting
                # together); the loser finds it made by the winner on the next try.
                if attempt == 2:
                    raise
                time.sleep(0.5)
        if url.startswith("sqlite:"):
            # WAL lets readers (show, plot) work while a tuner writes; it persists in the file.
            with storage.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        return storage
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot open storage {url!r}: {first}") from None


def _retry_lost_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial whose tuner stopped beating: queue its config again (it did not count)."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _check_sqlite_path(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if not path or path == ":memory:":
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot open storage {url!r}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot open storage {url!r}: directory {parent} is not writable")


def load_study(storage_url: str, name: str) -> optuna.Study:
    import optuna

    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise UsageError(f"no study {name!r} in {storage_url}{known}") from None
