"""Which tuner re-measures a study's pick: one, however many `autotune study` processes
share the study (each would otherwise run its own confirmation pass, and the pick would get
twice the re-measurements asked for).

Optuna's storage has no compare-and-set for a study attribute, so the claim is written, left
to settle, and read back: of tuners that write at nearly the same moment the last write
wins and every one of them reads it; a tuner that comes later finds a live claim and leaves
the pass to its owner. A claim is live while its owner runs (on this machine; elsewhere,
while it was renewed within `stale_s`), and renewed before each re-measurement.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from autotune.host import owner_alive, process_identity

if TYPE_CHECKING:
    import optuna

CLAIM_ATTR = "autotune:confirming"  # study system attr: the owner of the confirmation pass
SETTLE_S = 1.0  # longer than the time between two tuners' reads and writes of the claim


def _claim(study: optuna.Study) -> dict[str, Any] | None:
    return study._storage.get_study_system_attrs(study._study_id).get(CLAIM_ATTR)


def _mine(claim: dict[str, Any] | None) -> bool:
    me = process_identity()
    return claim is not None and all(claim.get(k) == me[k] for k in ("host", "pid", "start"))


def _write(study: optuna.Study) -> None:
    claim = {**process_identity(), "at": time.time()}
    study._storage.set_study_system_attr(study._study_id, CLAIM_ATTR, claim)


def claim_confirmation(study: optuna.Study, stale_s: float) -> dict[str, Any] | None:
    """None when this tuner is to run (or go on with) the confirmation pass, else the
    claim of the live tuner that runs it. Renews this tuner's claim."""
    current = _claim(study)
    if _mine(current):
        _write(study)
        return None
    if current is not None and _live(current, stale_s):
        return current
    _write(study)
    time.sleep(SETTLE_S)
    current = _claim(study)
    return None if _mine(current) else current


def _live(claim: dict[str, Any], stale_s: float) -> bool:
    alive = owner_alive(claim)
    if alive is not None:
        return alive
    at = claim.get("at")
    return isinstance(at, int | float) and time.time() - at < stale_s
