"""Which math fidelity a study found to be the cheapest that meets its accuracy constraint.

The question a Tenstorrent user asks of an emulated study (`--emulate tt`): "can this model
run at LoFi or HiFi2?". Throughput cannot answer it there (the CPU's speed says nothing about
the card's matrix engine), so fidelities are ranked by the card's cost model,
`tt_options.matmul_rate` (LoFi 4x, HiFi2 2x, HiFi3 1.33x HiFi4's matmul rate), and judged
by the study's accuracy constraints alone (`metric_drop` and `agreement`; a latency budget
measured on a CPU says nothing about the card).

- A fidelity *meets* the constraint when one of its measured trials does.
- The *cheapest* is the fidelity with the highest matmul rate that meets it.
- A cheaper fidelity is *ruled out* when a trial of it failed the accuracy constraint with
  nothing else lowered (weights at the backend's most precise dtype, no
  ``experimental_weight_dtype``, ``fp32_dest_acc_en`` not forced false) and none of its
  trials met it: lowering anything else only loses precision (the sampler's own rule). A
  cheaper fidelity that failed only with lowered weights, or was not measured, is not
  ruled out: it is reported as such.

The verdict is derived from the stored trials whenever it is shown (`show`, `report`, the
study's last lines, `export`), so it has one home: the trials. `card_space` is what a card
study's space file should offer so that no card trial goes to a ruled-out fidelity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.backends.tt_options import (
    FIDELITIES,
    FP32_DEST_ACC_EN,
    MATH_FIDELITY,
    TTNN_DEFAULT,
    matmul_rate,
)
from autotune.records import StudyRecord, TrialRecord, named_constraints, study_record

if TYPE_CHECKING:
    import optuna

#: What `export` says where a fidelity was ruled out: how a card study skips it.
FIDELITY_SPACE_NOTE = (
    "to spend no card trials on the fidelities this study ruled out, give the card study "
    "(--backend tt) --space with this JSON export, or a space file with math_fidelity = {values}"
)
#: The constraints about outputs (as `autotune.sampler.ACCURACY_CONSTRAINTS`).
ACCURACY = ("metric_drop", "agreement")


@dataclass(frozen=True)
class FidelityTrial:
    """What the verdict needs of one measured trial."""

    number: int
    fidelity: str
    accuracy_ok: bool  # met every accuracy constraint
    only_fidelity_lowered: bool  # nothing else below the most precise
    metric: float | None = None
    metric_drop: float | None = None
    agreement: float | None = None  # fraction, as the trial's metrics hold it


@dataclass(frozen=True)
class Constraint:
    """The study's accuracy constraint, for the verdict's words."""

    metric_name: str = "metric"
    max_metric_drop: float | None = None
    min_agreement: float | None = None  # percent


@dataclass(frozen=True)
class FidelityVerdict:
    cheapest: str | None  # the cheapest fidelity that met the constraint; None: none did
    ruled_out: dict[str, FidelityTrial] = field(default_factory=dict)  # and the trial showing it
    failed_lowered: dict[str, FidelityTrial] = field(default_factory=dict)  # failed, not ruled out
    unmeasured: tuple[str, ...] = ()  # cheaper than `cheapest`, no measured trial
    offered: tuple[str, ...] = ()  # the fidelities the study's trials named
    constraint: Constraint = field(default_factory=Constraint)

    @property
    def card_space(self) -> list[str]:
        """The fidelities worth a card trial: those offered, less the ruled-out ones."""
        return [f for f in self.offered if f not in self.ruled_out]

    def summary(self) -> str:
        """One line: what failed, and the cheapest that meets the constraint."""
        parts = []
        for f, t in self.ruled_out.items():
            parts.append(f"{f} fails the constraint ({self._evidence(t)})")
        for f, t in self.failed_lowered.items():
            parts.append(
                f"{f} failed only with lowered weights or accumulation (trial #{t.number}; "
                "not ruled out)"
            )
        if self.unmeasured:
            parts.append(f"{', '.join(self.unmeasured)} not measured")
        if self.cheapest is None:
            parts.append("no fidelity met the constraint")
        else:
            rate = matmul_rate(self.cheapest)
            cost = "the reference rate" if self.cheapest == "hifi4" else f"{rate:.3g}x hifi4"
            parts.append(
                f"cheapest that meets it: {self.cheapest} (card matmul rate {cost}, "
                "tt-metal matrix_engine.md)"
            )
        return "math fidelity: " + "; ".join(parts)

    def _evidence(self, t: FidelityTrial) -> str:
        c = self.constraint
        said = []
        if t.metric_drop is not None and c.max_metric_drop is not None:
            said.append(f"{c.metric_name} drop {t.metric_drop:.3g} vs limit {c.max_metric_drop:g}")
        if t.agreement is not None and c.min_agreement is not None:
            said.append(f"agreement {100 * t.agreement:.2f}% vs at least {c.min_agreement:g}%")
        return f"trial #{t.number}: " + (", ".join(said) or "accuracy constraint broken")

    def to_dict(self) -> dict[str, Any]:
        """What an export carries (and `show --format json`)."""
        return {
            "cheapest_feasible": self.cheapest,
            "matmul_rate_vs_hifi4": matmul_rate(self.cheapest) if self.cheapest else None,
            "ruled_out": {f: _trial_dict(t) for f, t in self.ruled_out.items()},
            "failed_with_lowered_weights": {
                f: _trial_dict(t) for f, t in self.failed_lowered.items()
            },
            "not_measured": list(self.unmeasured),
            "card_space": {MATH_FIDELITY.name: self.card_space},
            "summary": self.summary(),
            "cost_model": "tt-metal tech_reports/matrix_engine/matrix_engine.md: "
            "LoFi 4, HiFi2 2, HiFi3 1.33, HiFi4 1 TFLOPS (Wormhole, 1 GHz)",
        }


def _trial_dict(t: FidelityTrial) -> dict[str, Any]:
    return {"trial": t.number, "metric_drop": t.metric_drop, "agreement": t.agreement}


def choose(
    trials: Iterable[FidelityTrial], constraint: Constraint, offered: Iterable[str] = ()
) -> FidelityVerdict | None:
    """The verdict over `trials` (measured ones); None when none names a fidelity."""
    trials = list(trials)
    named = list(dict.fromkeys([*offered, *(t.fidelity for t in trials)]))
    if not named:
        return None
    met = {t.fidelity for t in trials if t.accuracy_ok}
    ranked = sorted((f for f in named if f in FIDELITIES), key=matmul_rate, reverse=True)
    cheapest = next((f for f in ranked if f in met), None)
    # Cheaper than the cheapest that met it (all of them when none did), and ttnn_default,
    # whose cost is ttnn's per-op choice.
    cheaper = ranked[: ranked.index(cheapest)] if cheapest else ranked
    cheaper.reverse()  # said most precise first, as the space lists them
    judged = [*cheaper, *(f for f in named if f not in FIDELITIES)]
    ruled_out: dict[str, FidelityTrial] = {}
    failed_lowered: dict[str, FidelityTrial] = {}
    unmeasured = []
    for f in judged:
        if f in met:
            continue
        fails = [t for t in trials if t.fidelity == f and not t.accuracy_ok]
        clean = [t for t in fails if t.only_fidelity_lowered]
        if clean:
            ruled_out[f] = min(clean, key=_closest)
        elif fails:
            failed_lowered[f] = min(fails, key=_closest)
        elif f in FIDELITIES:
            unmeasured.append(f)
    return FidelityVerdict(
        cheapest, ruled_out, failed_lowered, tuple(unmeasured), tuple(named), constraint
    )


def _closest(t: FidelityTrial) -> tuple[float, int]:
    """The failing trial that came closest to the limit (the fairest evidence)."""
    drop = t.metric_drop if t.metric_drop is not None else float("inf")
    return (drop, t.number)


def study_verdict(study: optuna.Study, meta: StudyRecord | None = None) -> FidelityVerdict | None:
    """The verdict of a stored study; None where its trials name no math fidelity."""
    from autotune.backends import UnknownBackendError, get_backend

    meta = meta or study_record(study)
    constraint = Constraint(
        metric_name=str(meta.metric.get("name", "metric")) if meta.metric else "metric",
        max_metric_drop=meta.metric_limit,
        min_agreement=meta.min_agreement,
    )
    entries = []
    offered: list[str] = []
    for t in study.get_trials(deepcopy=False):
        fidelity = t.params.get(MATH_FIDELITY.name)
        if fidelity is not None and fidelity not in offered:
            offered.append(str(fidelity))
        if t.state.name != "COMPLETE":
            continue
        record = TrialRecord.of(t)
        config = record.config or {}
        knobs = config.get("knobs") or {}
        if MATH_FIDELITY.name not in knobs:
            continue
        named = named_constraints(t)
        accuracy = [v for k, v in named.items() if k in ACCURACY]
        if not accuracy:
            continue  # not scored (e.g. another tool's trial)
        try:
            top = get_backend(str(config.get("backend"))).weight_dtypes[0]
        except UnknownBackendError:  # another autotune's backend: judge weights by bf16
            top = "bf16"
        weights = config.get("weight_dtypes") or {}
        lowered_knobs = (
            knobs.get("experimental_weight_dtype", "none") != "none"
            or knobs.get(FP32_DEST_ACC_EN.name) == "false"
        )
        metrics = record.metrics or {}
        entries.append(
            FidelityTrial(
                number=t.number,
                fidelity=str(knobs[MATH_FIDELITY.name]),
                accuracy_ok=all(v <= 0 for v in accuracy),
                only_fidelity_lowered=all(v == top for v in weights.values()) and not lowered_knobs,
                metric=metrics.get("metric"),
                metric_drop=metrics.get("metric_drop"),
                agreement=metrics.get("agreement"),
            )
        )
    return choose(entries, constraint, offered)


__all__ = ["TTNN_DEFAULT", "Constraint", "FidelityTrial", "FidelityVerdict", "choose"]
