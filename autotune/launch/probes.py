"""Checks, in a child process, that trials can start in the trial interpreter: this process
never imports torch or device libraries to find out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

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
    try:
        out = subprocess.run(
            [python, "-c", probe, *modules],
            capture_output=True,
            text=True,
            env=checkout_env(),
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"trial python {python!r} does not run: {exc}") from None
    if out:
        raise UsageError(
            f"trial python {python} cannot import {', '.join(out)}; {backend.install_hint}"
        )
