"""The study storage, riding out an outage: every read and write of Optuna's RDB storage
retried with backoff for a bounded time, and an SQLite file that was deleted or replaced
under a running study noticed before the next call.

Optuna leaves retries to its caller; a long study on a shared database must survive a
server restart, and an SQLite file held locked by another process for longer than its busy
timeout. `ResilientStorage` is an `optuna.storages.RDBStorage` (Optuna wraps it in its
cache and heartbeat machinery as it would the plain one) whose methods retry errors that say
the database could not be reached or was busy; any other error passes at once. Only the
outermost call retries (RDBStorage's methods call each other). A retry that runs out raises
`StorageUnavailable`, one line; a vanished SQLite file `StorageGone`.

A write whose commit reached the database while its reply was lost is retried too: Optuna
then refuses to finish a finished trial (which the tuner reads as "finished elsewhere") or,
rarely, stores a trial twice; neither loses a measurement.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from autotune import defaults
from autotune.errors import AutotuneError
from autotune.secrets import masked_url, scrubbed


class StorageUnavailable(AutotuneError):
    """The storage did not answer within the retry time (exit 2: the environment, not a
    finding)."""


class StorageGone(AutotuneError):
    """The SQLite file of the study was deleted or replaced while the study ran."""


MAX_BACKOFF = 5.0  # seconds between retries, at most

# SQLite errors that pass with time (another writer, a full disk freed); others (read-only
# file, corrupt file) fail at once.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk is full", "disk i/o")


def transient(exc: BaseException, sqlite: bool) -> bool:
    """Whether `exc` says the database was unreachable or busy (worth retrying)."""
    cause: BaseException | None = exc
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        cause = exc.__cause__ or exc.__context__
    if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
        return True
    if not isinstance(
        cause,
        sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | sqlalchemy.exc.DisconnectionError
        | sqlalchemy.exc.TimeoutError,
    ):
        return False
    if sqlite:
        text = str(cause).lower()
        return any(s in text for s in _SQLITE_TRANSIENT)
    return True


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (None: another database, or in memory)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class ResilientStorage(optuna.storages.RDBStorage):
    """RDBStorage whose calls retry for `retry_s` seconds (see the module's docstring)."""

    def __init__(self, url: str, *, retry_s: float = defaults.STORAGE_RETRY_SECONDS, **kw: Any):
        super().__init__(url, **kw)
        self.retry_s = retry_s
        self._local = threading.local()
        self._stopped = threading.Event()
        self._away = threading.Event()  # an outage was announced and has not ended
        self._file = sqlite_file(url)
        self._file_id = _identity(self._file) if self._file is not None else None
        self.shown_url = masked_url(url)
        # When this process last got an answer after an outage (monotonic; 0: never had
        # one). A heartbeat missed meanwhile says nothing about its tuner.
        self.recovered_at = 0.0

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        for key in ("_local", "_stopped", "_away"):  # per process
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._local, self._stopped, self._away = (
            threading.local(),
            threading.Event(),
            threading.Event(),
        )

    def calm_for(self, seconds: float) -> bool:
        """Whether this process has had answers for `seconds` (plus the longest wait
        between retries, by which every tuner has noticed the storage is back) since the
        last outage it saw; True when it saw none."""
        if not self.recovered_at:
            return True
        return time.monotonic() - self.recovered_at >= seconds + MAX_BACKOFF

    def stop_retrying(self) -> None:
        """Calls waiting on an outage give up now (Ctrl-C)."""
        self._stopped.set()

    def check_file(self) -> None:
        """StorageGone when the SQLite file is not the one opened (deleted, or replaced by
        another file): writes would go to an unlinked inode and vanish with it."""
        if self._file is None or self._file_id is None:
            return
        if _identity(self._file) != self._file_id:
            raise StorageGone(
                f"storage file {self._file} was deleted or replaced while the study ran; "
                "stopped (its trials are gone with it)"
            )

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        depth = getattr(self._local, "depth", 0)
        if depth:
            return fn(self, *args, **kwargs)
        self.check_file()
        deadline: float | None = None
        delay = 0.25
        while True:
            self._local.depth = 1
            try:
                out = fn(self, *args, **kwargs)
            except Exception as exc:
                if not transient(exc, self._file is not None):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_s
                    if not self._away.is_set():  # one line per outage, whichever call saw it
                        self._away.set()
                        _say(
                            f"storage {self.shown_url} did not answer "
                            f"({self._first_line(exc)}); retrying for up to {self.retry_s:g} s"
                        )
                if now >= deadline or self._stopped.is_set():
                    raise StorageUnavailable(
                        f"storage {self.shown_url} did not answer for {self.retry_s:g} s "
                        f"(--storage-retry-seconds): {self._first_line(exc)}"
                    ) from None
                self._stopped.wait(min(delay, deadline - now))
                delay = min(2 * delay, MAX_BACKOFF)
                self.check_file()
                continue
            finally:
                self._local.depth = 0
            if deadline is not None:
                self.recovered_at = time.monotonic()
            if self._away.is_set():
                self._away.clear()
                _say(f"storage {self.shown_url} answers again")
            return out

    def _first_line(self, exc: BaseException) -> str:
        inner = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
        inner = getattr(inner, "orig", None) or inner
        text = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
        return scrubbed(text, self.url)


def _say(line: str) -> None:
    print(f"autotune: {line}", file=sys.stderr, flush=True)


def _retrying(fn: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        return self.call(fn, *args, **kwargs)

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


def _calls_the_database(name: str, fn: Any) -> bool:
    """RDBStorage's methods that open a session: the public ones and the private ones its
    cache (`optuna.storages._CachedStorage`) and stale-trial check call; not the helpers
    handed a session, nor those that build results from rows."""
    import inspect

    if name.startswith("__") or not inspect.isfunction(fn):
        return False
    params = list(inspect.signature(fn).parameters)
    return params[1:2] != ["session"] and name != "_build_frozen_trial_from_trial_model"


for _name, _fn in list(vars(optuna.storages.RDBStorage).items()):
    if _calls_the_database(_name, _fn):
        setattr(ResilientStorage, _name, _retrying(_fn))
