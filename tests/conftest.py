"""Shared fixtures. Tests run real trial process subprocesses and real SQLite files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile/reference cache per test session (cold once, then warm)."""
    return tmp_path_factory.mktemp("autotune-cache")


def run_cli(
    cwd: Path, cache: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> CliResult:
    """The real `autotune` command, run from `cwd` with its caches in `cache`."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache)}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(tmp_path: Path, cache_dir: Path):
    """Run the real `autotune` command in a temporary working directory."""

    def run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> CliResult:
        return run_cli(tmp_path, cache_dir, *args, timeout=timeout, env=env)

    return run


FAST_SPACE = """\
batch_size = {min = 64, max = 256}
optimization_level = [0]
"""


@pytest.fixture
def fast_space(tmp_path: Path) -> Path:
    """Eager only (no compile) and small batches: trials take ~2-3 s each."""
    path = tmp_path / "fast.toml"
    path.write_text(FAST_SPACE)
    return path


# Every trial measured in full (--stop-slower 0): tests of other features expect each
# trial's own status, whatever the speed differences between configs on a busy machine.
FAST_ARGS = (
    "--measure-seconds",
    "0.2",
    "--eval-limit",
    "1000",
    "--no-progress",
    "--seed",
    "0",
    "--stop-slower",
    "0",
)
# Without queued starting points: for tests of re-queued trials, which run after the queue.
UNSEEDED_ARGS = (*FAST_ARGS, "--no-starting-points")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A real PostgreSQL server on 127.0.0.1 in a temporary directory, which a test may stop
    and start again on the same port (a database restart under a running study).

    Uses Debian's `postgresql` package (.ci/run installs it). Outside CI a machine without
    it skips, visibly; in CI a missing server is a failure."""

    def __init__(self) -> None:
        import glob
        import tempfile

        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        bindir = Path(bindirs[-1]) if bindirs else None
        if bindir is None or not (bindir / "initdb").exists():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
            pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root: use the package's user
            import shutil

            shutil.chown(self.base, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = self.base / "data", _free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "autotune")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "autotune", "autotune")
        self.url = f"postgresql://autotune@127.0.0.1:{self.port}/autotune"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._as_user, str(self.bindir / tool), *args]
        subprocess.run(cmd, check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        log = str(self.base / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self) -> None:
        """Stop now: open connections are cut, as a crash or a restart cuts them."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        import contextlib
        import shutil

        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for this test session (`PostgresServer`), never stopped."""
    server = PostgresServer()
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture
def postgres_server():
    """A PostgreSQL server of this test's own, which it may stop and start."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()
