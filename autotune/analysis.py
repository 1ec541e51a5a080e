"""Plain data about a finished study: trial rows, the Pareto front, the exported pick.

Everything here works on stored trials only, so `show`, `plot`, `export` and the tuner's
summary agree by construction.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotune.storage import STUDY_ATTR

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # Optuna's: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    status: str  # ours: ok, oom, timeout, crash, ...
    message: str
    config: dict[str, Any]
    metrics: dict[str, float]
    feasible: bool
    duplicate_of: int | None = None
    confirmations: tuple[float, ...] = ()  # re-measurements after the study (top candidates)

    @property
    def throughput(self) -> float | None:
        """The trial's own measurement (what the sampler saw; plotted)."""
        return self.metrics.get("throughput_samples_per_s")

    @property
    def confirmed_throughput(self) -> float | None:
        """Median over the trial's measurement and its re-measurements: the first measurement
        of the best of many noisy trials is biased upward, so the pick uses this."""
        if self.throughput is None:
            return None
        return statistics.median([self.throughput, *self.confirmations])

    @property
    def accuracy_drop(self) -> float | None:
        return self.metrics.get("accuracy_drop")

    @property
    def measured(self) -> bool:
        return self.state == "COMPLETE" and self.throughput is not None


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    confirmed = study.user_attrs.get(STUDY_ATTR, {}).get("confirmed", {})
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        constraints = list(t.constraints.values())
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name,
                status=attrs.get(
                    "status", "lost" if t.state.name == "FAIL" else t.state.name.lower()
                ),
                message=attrs.get("message", ""),
                config=attrs.get("config", {}),
                metrics=attrs.get("metrics", {}),
                feasible=t.state.name == "COMPLETE"
                and bool(constraints)
                and all(c <= 0 for c in constraints),
                duplicate_of=attrs.get("duplicate_of"),
                confirmations=tuple(confirmed.get(str(t.number), ())),
            )
        )
    return rows


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Non-dominated measured trials (max throughput, min accuracy drop), by throughput.

    Duplicates (a config measured once, reported again) are left out.
    """
    points = [r for r in rows if r.measured and r.duplicate_of is None]
    front = [r for r in points if not any(_dominates(o, r) for o in points if o is not r)]
    return sorted(front, key=lambda r: -r.throughput)


def _dominates(a: TrialRow, b: TrialRow) -> bool:
    return (
        a.throughput >= b.throughput
        and a.accuracy_drop <= b.accuracy_drop
        and (a.throughput > b.throughput or a.accuracy_drop < b.accuracy_drop)
    )


def best_feasible(rows: list[TrialRow]) -> TrialRow | None:
    """Highest (confirmed) throughput that meets the constraint; ties go to the smaller
    accuracy drop, then to the earlier trial."""
    feasible = [r for r in rows if r.feasible and r.measured and r.duplicate_of is None]
    if not feasible:
        return None
    return min(feasible, key=lambda r: (-r.confirmed_throughput, r.accuracy_drop, r.number))


def confirmation_candidates(rows: list[TrialRow], k: int) -> list[TrialRow]:
    """The k feasible trials with the highest first measurement."""
    feasible = [r for r in rows if r.feasible and r.measured and r.duplicate_of is None]
    return sorted(feasible, key=lambda r: (-r.throughput, r.accuracy_drop))[:k]


def failure_counts(rows: list[TrialRow]) -> dict[str, int]:
    return dict(Counter(r.status for r in rows if r.state in ("PRUNED", "FAIL")))


def seed_recipe_row(study: optuna.Study, rows: list[TrialRow]) -> TrialRow | None:
    """The measured trial of the backend's seed recipe (the reference the study must beat,
    see `Backend.seed_recipe`), or None where the study has none or it was not measured."""
    recipe = study.user_attrs.get(STUDY_ATTR, {}).get("seed_recipe")
    if not recipe:
        return None
    key = _config_key(recipe)
    found = [r for r in rows if r.measured and r.config and _config_key(r.config) == key]
    # The trial that measured it, not a later duplicate that copied its figures.
    return min(found, key=lambda r: (r.duplicate_of is not None, r.number), default=None)


def _config_key(config: dict[str, Any]) -> str:
    from autotune.config import TrialConfig

    return TrialConfig.from_dict(config).key()
