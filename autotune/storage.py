"""Opening the study storage (an Optuna RDB storage over SQLAlchemy)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from autotune import defaults
from autotune.errors import UsageError
from autotune.secrets import ambiguous, masked_url, scrubbed

if TYPE_CHECKING:
    import optuna

    from autotune.resilient_storage import ResilientStorage

_BACKEND_NAMES = {
    "postgresql": "PostgreSQL",
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "mssql": "SQL Server",
    "oracle": "Oracle",
}
# The module and install command of each synchronous driver SQLAlchemy 2.1 knows, by
# (backend, driver). A plain URL gets SQLAlchemy's default driver: postgresql -> psycopg (3),
# mysql and mariadb -> mysqldb (module MySQLdb), mssql -> pyodbc, oracle -> oracledb.
_DRIVERS = {
    ("postgresql", "psycopg"): ("psycopg", "pip install 'autotune[postgres]'"),
    ("postgresql", "psycopg2"): ("psycopg2", "pip install psycopg2-binary"),
    ("postgresql", "pg8000"): ("pg8000", "pip install pg8000"),
    ("postgresql", "psycopg2cffi"): ("psycopg2cffi", "pip install psycopg2cffi"),
    ("mysql", "mysqldb"): ("MySQLdb", "pip install mysqlclient"),
    ("mysql", "pymysql"): ("pymysql", "pip install pymysql"),
    ("mysql", "mysqlconnector"): ("mysql.connector", "pip install mysql-connector-python"),
    ("mysql", "mariadbconnector"): ("mariadb", "pip install mariadb"),
    ("mysql", "cymysql"): ("cymysql", "pip install cymysql"),
    ("mssql", "pyodbc"): ("pyodbc", "pip install pyodbc"),
    ("mssql", "pymssql"): ("pymssql", "pip install pymssql"),
    ("oracle", "oracledb"): ("oracledb", "pip install oracledb"),
    ("oracle", "cx_oracle"): ("cx_Oracle", "pip install cx_Oracle"),
}


def open_storage(
    url: str, heartbeat_s: int | None = None, retry_s: float = defaults.STORAGE_RETRY_SECONDS
) -> ResilientStorage:
    """Optuna's RDB storage, each call retried for `retry_s` seconds through an outage
    (`autotune.resilient_storage`). With `heartbeat_s`, running trials carry a heartbeat and
    a trial whose heartbeat stops for 3 intervals is failed and re-queued by any tuner
    (`autotune.liveness`). Opening it is not retried: a server that refuses the first
    connection is more likely a wrong URL than an outage."""
    import warnings

    import optuna
    import sqlalchemy.exc

    from autotune.resilient_storage import ResilientStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own messages say what matters
    if ambiguous(url):
        raise UsageError(
            f"cannot open storage {shown(url)!r}: its user or password holds an '@'; write it "
            "percent-encoded, as %40"
        )
    _check_driver(url)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        # Wait for a busy writer, then fail with "database is locked" and retry.
        engine_kwargs["connect_args"] = {"timeout": defaults.SQLITE_BUSY_TIMEOUT}
        _check_sqlite_path(url)
    heartbeat = {}
    if heartbeat_s:
        from autotune.liveness import retry_lost_trial

        heartbeat = {
            "heartbeat_interval": heartbeat_s,
            "grace_period": defaults.SILENT_BEATS * heartbeat_s,
            "heartbeat_stale_trial_callback": retry_lost_trial,
        }
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = ResilientStorage(
                        url, retry_s=retry_s, engine_kwargs=engine_kwargs, **heartbeat
                    )
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
                # Two processes created the schema of a new database at once (hosts starting
                # together, two `study` commands on one new SQLite file): the loser finds it
                # made by the winner on the next try ("table ... already exists", a unique
                # key, or the file locked while the other wrote it).
                racing = isinstance(exc, sqlalchemy.exc.IntegrityError) or any(
                    s in str(exc) for s in ("already exists", "database is locked")
                )
                if attempt == 4 or not racing:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if url.startswith("sqlite:"):
            # WAL lets readers (show, plot) work while a tuner writes; it persists in the file.
            with storage.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        return storage
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot open storage {shown(url)!r}: {scrubbed(first, url)}") from None


def _check_driver(url: str) -> None:
    """Name the missing DB-API module and what installs it; Optuna only says that one failed
    to import. Unknown dialects and malformed URLs are left to RDBStorage's own error."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()  # resolves a plain URL to SQLAlchemy's default driver
    except (sqlalchemy.exc.SQLAlchemyError, ValueError):
        return
    try:
        dialect.import_dbapi()  # the import SQLAlchemy itself does when it creates the engine
    except ModuleNotFoundError as exc:
        backend = parsed.get_backend_name()
        # mariadb:// uses the mysql dialect's drivers.
        module, install = _DRIVERS.get(
            ("mysql" if backend == "mariadb" else backend, dialect.driver), (None, None)
        )
        missing = exc.name or dialect.driver
        name = _BACKEND_NAMES.get(backend, backend)
        if module is None or missing.split(".")[0] != module.split(".")[0]:
            # A driver we have no entry for, or one of its own dependencies is missing: name
            # the module, without guessing which package provides it.
            raise UsageError(
                f"{name} driver {dialect.driver!r} needs module {missing!r}, which is not installed"
            ) from None
        raise UsageError(f"{name} driver {module!r} is not installed: {install}") from None


def _check_sqlite_path(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if not path or path == ":memory:":
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot open storage {shown(url)!r}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot open storage {shown(url)!r}: directory {parent} is not writable")


def load_study(storage_url: str, name: str) -> optuna.Study:
    import optuna

    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise UsageError(f"no study {name!r} in {shown(storage_url)}{known}") from None


def shown(url: str) -> str:
    """The URL as messages and the HTML report print it: any password masked, whether the
    URL parses or not (`autotune.secrets.masked_url`)."""
    return masked_url(url)
