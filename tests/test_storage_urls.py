"""Storage URLs: each PostgreSQL URL form reaches the real server; a missing driver is named."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.test_bad_input import _one_line_error


@pytest.mark.parametrize("driver", ["", "+psycopg", "+psycopg2"])
def test_postgresql_url_forms_reach_the_server(cli, postgres_url, driver):
    """Plain `postgresql://` (psycopg 3), explicit psycopg 3, and psycopg2 (the `test` extra
    installs it) all open the same database: `show` lists the study another form made."""
    import optuna

    from autotune.storage import open_storage

    assert postgres_url.startswith("postgresql://")
    name = f"forms-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=open_storage(postgres_url))
    url = postgres_url.replace("postgresql://", f"postgresql{driver}://", 1)
    line = _one_line_error(cli("show", "--study", "absent", "--storage", url, timeout=120))
    assert "no study 'absent'" in line and name in line, line


@pytest.mark.parametrize(
    ("url", "module", "expected"),
    [
        (
            "mysql://user@127.0.0.1:1/autotune",
            "MySQLdb",  # SQLAlchemy 2.1's default MySQL driver (mysqlclient)
            "MySQL driver 'MySQLdb' is not installed: pip install mysqlclient",
        ),
        (
            "mysql+pymysql://user@127.0.0.1:1/autotune",
            "pymysql",
            "MySQL driver 'pymysql' is not installed: pip install pymysql",
        ),
        (
            "postgresql+pg8000://user@127.0.0.1:1/autotune",
            "pg8000",
            "PostgreSQL driver 'pg8000' is not installed: pip install pg8000",
        ),
    ],
)
def test_missing_driver_is_named(cli, url, module, expected):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here; this test needs it absent")
    line = _one_line_error(cli("show", "--study", "x", "--storage", url, timeout=120))
    assert line == f"autotune: {expected}"


def test_missing_psycopg_names_the_postgres_extra(cli, tmp_path):
    """The plain URL without psycopg 3 installed. The CLI runs on a copy of this interpreter's
    packages with psycopg left out (really absent, not patched): every other entry of
    site-packages is linked into one folder, the only one on the path besides the repo."""
    site = Path(importlib.util.find_spec("sqlalchemy").origin).parent.parent
    packages = tmp_path / "site-packages"
    packages.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith("psycopg2") or not name.startswith("psycopg"):
            (packages / entry.name).symlink_to(entry)
    root = Path(__file__).resolve().parent.parent
    url = "postgresql://user@127.0.0.1:1/autotune"
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "autotune", "show", "--study", "x", "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(packages)])},
    )
    line = _one_line_error(proc)
    assert line == (
        "autotune: PostgreSQL driver 'psycopg' is not installed: pip install 'autotune[postgres]'"
    )


def test_a_password_in_the_url_is_never_printed(cli):
    # Nothing listens on port 1: the connection fails and the message names the storage.
    url = "postgresql://autotune:hunter2@127.0.0.1:1/autotune"
    line = _one_line_error(cli("show", "--study", "x", "--storage", url, timeout=120))
    assert "postgresql://autotune:***@127.0.0.1:1/autotune" in line, line
    assert "hunter2" not in line
