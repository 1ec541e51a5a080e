"""Plain data about a finished study: trial rows, the Pareto front, the exported pick.

Everything here works on stored trials only, so `show`, `plot`, `export` and the tuner's
summary agree by construction.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.errors import NothingFoundError
from autotune.measure import Measurement
from autotune.objective import Objective
from autotune.records import (
    TrialRecord,
    block_times,
    named_constraints,
    retried_numbers,
    study_record,
)
from autotune.wire import Status

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
    first: Measurement | None = None  # the trial's own timed blocks, where stored
    remeasurements: tuple[Measurement, ...] = ()  # after the study (winner selection)
    remeasure_attempts: int = 0  # failed re-measurements included
    remeasured_metrics: tuple[dict[str, float], ...] = ()  # each one's latency figures
    objective: Objective = field(default_factory=Objective)  # the study's: ranks the rows

    @property
    def measurements(self) -> int:
        """Successful measurements of the config: its own and the re-measurements."""
        return 1 + len(self.remeasurements)

    @property
    def throughput(self) -> float | None:
        """The trial's own measurement (what the sampler saw; plotted)."""
        return self.metrics.get("throughput_samples_per_s")

    @property
    def confirmed(self) -> bool:
        """Re-measured at least once after the study."""
        return bool(self.remeasurements)

    @property
    def confirmations(self) -> tuple[float, ...]:
        """Each re-measurement's own median throughput."""
        return tuple(m.throughput for m in self.remeasurements)

    @property
    def confirmed_throughput(self) -> float | None:
        """Median block throughput over the pooled blocks of all measurements of the trial's
        config (its own and the re-measurements): the first measurement of the best of many
        noisy trials is biased upward, so the pick uses this."""
        if self.throughput is None or not self.remeasurements:
            return self.throughput
        pooled = self.pooled
        return pooled.throughput if pooled is not None else None

    @property
    def pooled(self) -> Measurement | None:
        """All the config's timed blocks as one measurement; a trial stored without its
        blocks counts as one block at its median (None: no figure at all)."""
        first = self.first
        if first is None:
            if self.throughput is None:
                return None
            batch = self.config.get("batch_size", 1)
            first = Measurement((batch / self.throughput,), 1, batch)
        return Measurement.merge([first, *self.remeasurements])

    @property
    def figure(self) -> float | None:
        """The study's objective over every measurement of the config: the pooled
        throughput, or the median of the measurements' latency percentiles."""
        if self.objective.kind == "throughput":
            return self.confirmed_throughput
        key = self.objective.latency_key
        values = [m.get(key) for m in (self.metrics, *self.remeasured_metrics)]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% interval of `figure`: for throughput the median's over the pooled blocks;
        for latency the widest of the measurements' intervals of the percentile."""
        if self.figure is None:
            return None
        if self.objective.kind == "throughput":
            pooled = self.pooled
            return pooled.throughput_ci if pooled is not None else None
        else:
            key = self.objective.latency_key
            ms = (self.metrics, *self.remeasured_metrics)
            los = [m[f"{key}_ci_lo"] for m in ms if m.get(f"{key}_ci_lo") is not None]
            his = [m[f"{key}_ci_hi"] for m in ms if m.get(f"{key}_ci_hi") is not None]
            lo, hi = (min(los), max(his)) if los and his else (None, None)
        return (lo, hi) if lo is not None and hi is not None else (self.figure, self.figure)

    @property
    def score(self) -> float:
        """Higher is better, for either objective (`Objective.score`)."""
        value = self.objective.score({self.objective.key: self.figure})
        return value if value is not None else 0.0

    @property
    def metric_drop(self) -> float | None:
        """How much worse than fp32 the study's metric is, in its unit (NaN outputs: inf
        where the metric has no bound, stored as None)."""
        drop = self.metrics.get("metric_drop")
        return float("inf") if drop is None and self.status == "nan" else drop

    @property
    def measured(self) -> bool:
        return self.state == "COMPLETE" and self.throughput is not None


# What of a re-measurement's metrics its entry keeps, beside the raw blocks: latency.
REMEASURED_PREFIX = "latency_ms_"


def remeasurement_entry(
    block_times: list[float], iters_per_block: int, metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One re-measurement as stored in the study metadata (`confirmed`): its raw block
    times at 6 significant digits (1e-6 relative, far below timing noise), and its latency
    percentiles with their intervals."""
    latency = {
        k: float(f"{v:.6g}")
        for k, v in (metrics or {}).items()
        if k.startswith(REMEASURED_PREFIX) and isinstance(v, int | float) and math.isfinite(v)
    }
    return {
        "iters_per_block": iters_per_block,
        "block_times": [float(f"{t:.6g}") for t in block_times],
        **({"metrics": latency} if latency else {}),
    }


# A re-measurement under this fraction of its config's earlier figure, and below that
# figure's 95% interval, says the machine got slower meanwhile, by load that /proc/stat
# cannot show (another guest on the host, clocks): the tuner measures it again first.
SLOWER_THAN_BEFORE = 0.8


def slower_than_before(before: Measurement | None, now: Measurement) -> str | None:
    """Why `now` looks distorted next to the config's earlier measurements (`before`,
    pooled), None where it does not."""
    if before is None:
        return None
    lo, _ = before.throughput_ci
    if now.throughput >= lo or now.throughput >= SLOWER_THAN_BEFORE * before.throughput:
        return None
    return (
        f"{now.throughput:,.0f} samples/s, {now.throughput / before.throughput:.2f}x its "
        f"earlier {before.throughput:,.0f} (95% CI from {lo:,.0f})"
    )


def _remeasurements(entries: list[dict[str, Any]], batch_size: int) -> tuple[Measurement, ...]:
    out = []
    for e in entries:
        if e.get("block_times"):  # failed attempts have none
            out.append(Measurement(tuple(e["block_times"]), e["iters_per_block"], batch_size))
    return tuple(out)


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    meta = study_record(study)
    confirmed, objective = meta.confirmed, meta.objective
    rows = []
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        record = TrialRecord.of(t, retried)
        constraints = list(named_constraints(t).values())
        config = record.config or {}
        batch = config.get("batch_size", 1)
        entries = confirmed.get(str(t.number), [])
        blocks = block_times(t)
        first = Measurement(tuple(blocks), record.iters_per_block, batch) if blocks else None
        if record.status is not None:
            status = record.status
        else:  # failed before its tuner wrote anything: lost with it
            status = Status.LOST.value if t.state.name == "FAIL" else t.state.name.lower()
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name,
                status=status,
                message=record.message or "",
                config=config,
                metrics=record.metrics or {},
                feasible=t.state.name == "COMPLETE"
                and bool(constraints)
                and all(c <= 0 for c in constraints),
                duplicate_of=record.duplicate_of,
                first=first,
                remeasurements=_remeasurements(entries, batch),
                remeasure_attempts=len(entries),
                remeasured_metrics=tuple(
                    e.get("metrics", {}) for e in entries if e.get("block_times")
                ),
                objective=objective,
            )
        )
    return rows


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Non-dominated measured trials (max pooled throughput, min metric drop), by throughput.

    Duplicates (a config measured once, reported again) are left out.
    """
    points = [r for r in rows if r.measured and r.duplicate_of is None]
    front = [r for r in points if not any(_dominates(o, r) for o in points if o is not r)]
    return sorted(front, key=lambda r: -r.confirmed_throughput)


def _dominates(a: TrialRow, b: TrialRow) -> bool:
    # Pooled figures, as the pick is ranked: the front and the pick agree.
    ta, tb = a.confirmed_throughput, b.confirmed_throughput
    return (
        ta >= tb and a.metric_drop <= b.metric_drop and (ta > tb or a.metric_drop < b.metric_drop)
    )


def _feasible(rows: list[TrialRow]) -> list[TrialRow]:
    return [r for r in rows if r.feasible and r.measured and r.duplicate_of is None]


# Tied configs whose figures are this close after TIE_MEASUREMENTS measurements each are
# equivalent for any purpose: re-measuring them further would not change the pick. After
# TIE_MAX_MEASUREMENTS each, configs still within noise are tied at the machine's noise.
TIE_MARGIN = 0.03
TIE_MEASUREMENTS = 3
TIE_MAX_MEASUREMENTS = 5


def _leader_key(r: TrialRow) -> tuple[float, float, int]:
    return (-r.score, r.metric_drop, r.number)


def tie_break_key(r: TrialRow) -> tuple[Any, ...]:
    """Among configs tied within noise: the smaller batch (lower latency and memory), then
    fewer compiled variants (lower optimization level, no trace), then the better figure."""
    c = r.config
    return (
        c.get("batch_size", 0),
        c.get("optimization_level", 0),
        bool(c.get("trace")),
        *_leader_key(r),
    )


def within_noise(a: TrialRow, b: TrialRow) -> bool:
    """Whether the two configs' 95% intervals overlap: the measurements cannot tell which
    is faster."""
    ia, ib = a.interval, b.interval
    if ia is None or ib is None:
        return False
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def _equivalent(a: TrialRow, b: TrialRow) -> bool:
    """Settled as a tie: within TIE_MARGIN after TIE_MEASUREMENTS measurements each, or
    still within noise after TIE_MAX_MEASUREMENTS."""
    fewest = min(a.measurements, b.measurements)
    if fewest >= TIE_MAX_MEASUREMENTS:
        return True
    if fewest < TIE_MEASUREMENTS:
        return False
    return abs(a.score - b.score) <= TIE_MARGIN * max(a.score, b.score)


@dataclass(frozen=True)
class Decision:
    """The pick and how sure it is. `leader` has the best figure; `tied` are the others
    within noise of it (intervals overlap); the pick is the tie-break's first of the leader
    and `tied` (`tie_break_key`); `runner_up` is the best config not tied."""

    pick: TrialRow
    leader: TrialRow
    tied: tuple[TrialRow, ...]
    runner_up: TrialRow | None

    @property
    def separated(self) -> bool:
        return not self.tied

    def summary(self) -> str:
        """One phrase: how the pick stands against the others."""
        unit = _unit(self.pick)
        if self.tied:
            others = [r for r in (self.leader, *self.tied) if r is not self.pick]
            names = " and ".join(f"#{r.number}" for r in others)
            return (
                f"#{self.pick.number} is tied within noise with {names} (95% intervals "
                "overlap); picked as the smaller batch, then fewer compiled variants"
            )
        if self.runner_up is None:
            return f"#{self.pick.number} is the only feasible config"
        a, b = self.pick, self.runner_up
        ahead = 100 * (a.score / b.score - 1) if b.score else float("inf")
        return (
            f"#{a.number} is ahead of the next (#{b.number}) by {ahead:.1f}% "
            f"(95% CI {_span(a.interval)} vs {_span(b.interval)} {unit})"
        )


def _unit(r: TrialRow) -> str:
    return "samples/s" if r.objective.kind == "throughput" else "ms"


def _span(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "?"
    lo, hi = interval
    return f"{lo:,.4g}-{hi:,.4g}" if max(lo, hi) < 1e4 else f"{lo:,.0f}-{hi:,.0f}"


def decide(rows: list[TrialRow]) -> Decision | None:
    """The pick among feasible measured trials, None when none is.

    Once any feasible trial was re-measured, only re-measured trials compete: the pick is
    never a single, upward-biased first measurement (the tuner re-measures until the top
    is confirmed, see `confirmation_candidates`). The leader has the best figure over all
    its measurements (ties: the smaller metric drop, then the earlier trial); configs
    within noise of it are tied, and the tie-break picks among them."""
    feasible = _feasible(rows)
    pool = [r for r in feasible if r.confirmed] or feasible
    if not pool:
        return None
    leader = min(pool, key=_leader_key)
    tied = tuple(r for r in pool if r is not leader and within_noise(r, leader))
    pick = min((leader, *tied), key=tie_break_key)
    rest = [r for r in pool if r is not leader and r not in tied]
    runner_up = min(rest, key=_leader_key) if rest else None
    return Decision(pick, leader, tied, runner_up)


def best_feasible(rows: list[TrialRow]) -> TrialRow | None:
    """The pick (`decide`), None when no trial is feasible."""
    decision = decide(rows)
    return decision.pick if decision is not None else None


def winner(study: optuna.Study) -> TrialRow:
    """The trial `autotune export` exports: `best_feasible` over the stored trials.
    NothingFoundError, naming the constraint, when no trial meets it."""
    row = best_feasible(trial_rows(study))
    if row is None:
        meta = study_record(study)
        raise NothingFoundError(
            f"study {study.study_name!r} has no feasible trial "
            f"(none measured with {meta.feasible_text}"
            + (f" and {meta.min_agreement:g}% agreement" if meta.min_agreement else "")
            + ")"
        )
    return row


def confirmation_candidates(rows: list[TrialRow], k: int) -> list[TrialRow]:
    """Feasible trials to re-measure next, in one interleaved round; empty when the pick is
    settled.

    First the k best first measurements. Then any unconfirmed trial whose first measurement
    is within noise of the leader or better (it may be the best). Then, while configs are
    tied within noise of the leader and not yet settled as equivalent (`_equivalent`), the
    leader and those (at most k + 1, the least measured first): more blocks narrow the
    intervals until they separate. A trial whose re-measurement failed is not tried again
    and loses to re-measured ones.
    """
    if k < 1:
        return []
    feasible = _feasible(rows)
    by_first = sorted(feasible, key=lambda r: (-_first_score(r), r.metric_drop, r.number))
    todo = [r for r in by_first[:k] if not r.remeasure_attempts]
    if todo:
        return todo
    pool = [r for r in feasible if r.confirmed]
    if not pool:
        return []
    leader = min(pool, key=_leader_key)
    challengers = [
        r
        for r in by_first
        if not r.remeasure_attempts and (_first_score(r) >= leader.score or within_noise(r, leader))
    ]
    if challengers:
        return challengers[:k]
    open_ties = [r for r in pool if r is not leader and within_noise(r, leader)]
    open_ties = [r for r in open_ties if not _equivalent(r, leader)]
    if not open_ties:
        return []
    group = sorted([leader, *open_ties], key=_leader_key)[: k + 1]
    return sorted(group, key=lambda r: (r.measurements, _leader_key(r)))


def _first_score(r: TrialRow) -> float:
    """The trial's own measurement, as `TrialRow.score` (what the sampler saw)."""
    value = r.objective.score(r.metrics)
    return value if value is not None else 0.0


def failure_counts(rows: list[TrialRow]) -> dict[str, int]:
    return dict(Counter(r.status for r in rows if r.state in ("PRUNED", "FAIL")))


def reference_recipe_row(study: optuna.Study, rows: list[TrialRow]) -> TrialRow | None:
    """The measured trial of the backend's reference recipe (the reference the study must beat,
    see `Backend.reference_recipe`), or None where the study has none or it was not measured."""
    recipe = study_record(study).reference_recipe
    if not recipe:
        return None
    key = _config_key(recipe)
    found = [r for r in rows if r.measured and r.config and _config_key(r.config) == key]
    # The trial that measured it, not a later duplicate that copied its figures.
    return min(found, key=lambda r: (r.duplicate_of is not None, r.number), default=None)


def _config_key(config: dict[str, Any]) -> str:
    from autotune.wire import TrialConfig

    return TrialConfig.from_dict(config).key()
