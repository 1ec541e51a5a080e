"""autotune: find the fastest inference config of a PyTorch model that stays accurate.

Kept import-light (no torch, no optuna) so the CLI starts fast and the trial process runs in
interpreters that have only torch and the device stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["apply_config", "load_config", "tune"]
__version__ = "0.1.0"


def apply_config(model: Any, source: Any) -> Any:
    """See `autotune.export.apply_config`."""
    from autotune.export import apply_config as _apply

    return _apply(model, source)


def tune(model: Any, **options: Any) -> Any:
    """See `autotune.api.tune`."""
    from autotune.api import tune as _tune

    return _tune(model, **options)


def load_config(source: Any) -> Any:
    """See `autotune.export.load_config`."""
    from autotune.export import load_config as _load

    return _load(source)
