"""Checks, in a child process, that trials can start in the trial interpreter: this process
never imports torch or device libraries to find out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.backends.base import run_probe
from autotune.errors import UsageError
from autotune.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from autotune.backends import Backend


def checkout_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with this checkout first on PYTHONPATH: a trial or a
    probe runs this checkout's code, whichever interpreter runs it."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def check_trial_python(python: str, backend: Backend) -> None:
    """Fail early, in one line, when trials could never start in the trial interpreter."""
    if not Path(python).exists():
        raise UsageError(f"trial python {python!r} does not exist")
    probe = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    modules = ["autotune", *backend.trial_modules]
    proc = run_probe(python, probe, *modules, env=checkout_env(), timeout=60, check=True)
    missing = proc.stdout.split()
    if missing:
        raise backend.cannot_import(python, missing)
