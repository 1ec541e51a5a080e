"""What makes running a config pointless, for the sampler (which does not propose it) and the
tuner (which records the trial without starting a trial process, or stops it early):

- a duplicate: the same config as a trial that used up the budget, whose outcome stands;
- the OOM bound: the same config ran out of memory at this or a smaller batch size (memory
  use grows with the batch size, so it would run out again);
- stop-below: a trial far slower after warm-up than the best feasible trial so far is
  clearly losing (`stop_below`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from autotune.analysis import best_feasible, trial_rows
from autotune.backends.cpu import CPUEmulatedTTBackend
from autotune.backends.tt_options import MATH_FIDELITY
from autotune.errors import UsageError
from autotune.records import TrialRecord
from autotune.wire import Status, TrialConfig

if TYPE_CHECKING:
    import optuna


def oom_bound(candidate: Mapping[str, Any], oom: Mapping[str, Any], batch: str) -> bool:
    """Whether `oom`, a config that ran out of memory, says `candidate` would too: the same
    config at this or a smaller batch size. `batch` names the batch-size entry of both (the
    sampler's log2 exponent or a config's batch size: they order alike)."""
    if oom[batch] > candidate[batch]:
        return False
    rest = {k: v for k, v in candidate.items() if k != batch}
    return {k: v for k, v in oom.items() if k != batch} == rest


def earlier_outcome(
    config: TrialConfig, spent: Iterable[optuna.trial.FrozenTrial]
) -> optuna.trial.FrozenTrial | None:
    """The first of `spent` (trials that used up the budget) whose outcome makes running
    `config` pointless: the same config (a duplicate), or its OOM bound."""
    key, wanted = config.key(), config.to_dict()
    for t in spent:
        record = TrialRecord.of(t)
        if record.config_key == key:
            return t
        if record.status == Status.OOM and record.config is not None:
            ran = TrialConfig.from_dict(record.config).to_dict()
            if oom_bound(wanted, ran, "batch_size"):
                return t
    return None


def check_stop_ratio(ratio: float) -> None:
    # Up to 1 the threshold is at or above the best: trials as fast as it would stop.
    if (
        not isinstance(ratio, int | float)
        or not math.isfinite(ratio)
        or ratio < 0
        or 0 < ratio <= 1
    ):
        raise UsageError(f"--stop-slower must be 0 (off) or above 1, not {ratio:g}")


#: Backends whose measured throughput says nothing about math fidelity's cost: the CPU
#: emulates the card's numerics (one matmul per kept phase: HiFi2 is slower here than HiFi4,
#: the card runs it 2x faster). The sampler descends fidelity there whatever was measured,
#: and a trial is stopped as slow only against trials at its own fidelity.
ACCURACY_ONLY_FIDELITY = (CPUEmulatedTTBackend.name,)


def stop_below(
    study: optuna.Study, ratio: float, config: TrialConfig | None = None
) -> float | None:
    """The throughput (samples/s) under which a trial stops after warm-up as slow: the best
    feasible trial's divided by `ratio` (--stop-slower; tinygrad's BEAM stops timing at 3x
    slower than the best). Such a trial is clearly losing, and stopping it saves its timing
    and its full-set evaluation. None while off (0) or nothing is feasible yet. The trial
    process compares its settled warm-up throughput with it (`TrialJob.stop_below`).

    `config`: the trial's; in an emulated study (`ACCURACY_ONLY_FIDELITY`) only trials at
    its math fidelity are compared with it."""
    if not ratio:
        return None
    rows = trial_rows(study)
    if config is not None and config.backend in ACCURACY_ONLY_FIDELITY:
        fidelity = config.knob_map.get(MATH_FIDELITY.name)
        rows = [
            r for r in rows if (r.config.get("knobs") or {}).get(MATH_FIDELITY.name) == fidelity
        ]
    best = best_feasible(rows)
    return best.throughput / ratio if best is not None else None
