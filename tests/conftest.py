"""Shared fixtures. Tests run real worker subprocesses and real SQLite files."""

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


@pytest.fixture
def cli(tmp_path: Path, cache_dir: Path):
    """Run the real `autotune` command in a temporary working directory."""

    def run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> CliResult:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache_dir)}
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "autotune", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

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


FAST_ARGS = ("--measure-seconds", "0.2", "--eval-limit", "1000", "--no-progress", "--seed", "0")
