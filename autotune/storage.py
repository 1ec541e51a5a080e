"""Opening the study storage (an Optuna RDB storage over SQLAlchemy)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.errors import UsageError

if TYPE_CHECKING:
    import optuna

DEFAULT_STORAGE = "sqlite:///autotune.db"
STUDY_ATTR = "autotune"  # our study-level metadata lives under one prefixed user attr


def open_storage(url: str) -> optuna.storages.RDBStorage:
    import optuna
    import sqlalchemy.exc

    engine_kwargs = {}
    if url.startswith("sqlite:"):
        # Wait for a busy writer instead of failing with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": 60}
        _check_sqlite_path(url)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot open storage {url!r}: {first}") from None


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
