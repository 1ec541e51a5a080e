"""autotune's default search strategy: best-first local search over what the dimensions are.

Blind sampling wastes trials (and compilations) on this space: batch size is ordered
(throughput rises, then falls or runs out of memory, and OOM is monotone), the categorical
switches mostly act independently of each other, and a per-layer dtype map is a refinement
of a uniform one. So the strategy moves one step at a time from configs it has measured:

1. flip the activation dtype (the whole model follows: uniform precision); step math
   fidelity and the CPU's streams one place up or down (ordered scales);
2. batch size x4 / ÷4 (coarse climb), never at or above a batch that ran out of memory;
3. flip the optimization level, trace and backend switches;
4. batch size x2 / ÷2 (refine);
5. lower or raise one weight-dtype dimension (per-layer deviations).

Candidates are the untried moves of the configs near the front: each feasible measured
config within FRONT x the best throughput (its *base*) offers its uniform moves (1-4); the
best config also offers the per-layer deviations (5), and a per-layer map is a base only
while it is the best. Each candidate is valued optimistically from known results: the
base's throughput times the best ratio that kind of move ("activation dtype -> bf16",
"level -> 0", "one layer -> fp32") has shown anywhere so far, or times 1 where it has
not been measured yet. A level change is a kind per (from, to) level and a compiler
change per (from eager or not, to): a compile from eager (often 2x) says nothing about
swapping levels or compilers (mostly within 10%). A batch step is a kind per (from, to)
batch sizes, carried over only between configs at the same batch size, and the best
config climbs its own batch curve whatever others showed (dimensions interact: bf16
halves the bytes per sample): its steps up are valued by how that curve rose into it
(`_climb_ratio`), so a rising curve is climbed before switches whose measured gains are
the size of the noise.

The next trial is the highest-valued candidate (ties: the better base, then the order
above): the best config's moves first (a climb), then those of configs within noise of
it. A candidate valued under LOSING x the best is not proposed once its kind of move has
lost WRITE_OFF times (after a single loss, which may be noise, it is only tried last):
known results say it loses (e.g. fp32 where bf16 measured 8x faster, or the reverse on a
CPU without native bf16), and compiling it would only have it stopped as slow. When no
candidate is left the strategy returns None: the tuner then asks for no more trials
(`search_state`) and spends the rest of the budget deciding the pick. Trials still running
count as tried, so parallel slots and hosts never pick the same move. A config over the
latency budget bounds its batch sizes as an OOM does.

The strategy is stateless: it is recomputed from the study's trials at every ask, so it
resumes and works across hosts like any Optuna sampler.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from autotune.backends.cpu import CHANNELS_LAST, COMPILER, OPENVINO
from autotune.backends.streams import STREAMS_NAME
from autotune.backends.tt_options import (
    FIDELITIES,
    MATH_FIDELITY,
    TRACE_REGION_KNOB,
    matmul_rate,
)
from autotune.defaults import SAMPLERS
from autotune.objective import Objective
from autotune.pruning import ACCURACY_ONLY_FIDELITY, oom_bound
from autotune.records import TrialRecord, named_constraints, retried_numbers, trial_status
from autotune.wire import Status
from search_spaces import (
    ACTIVATION_DTYPE,
    BATCH_SIZE,
    LOG2_BATCH_SIZE,
    OPTIMIZATION_LEVEL,
    TRACE,
    WEIGHT_PREFIX,
)

if TYPE_CHECKING:
    from search_spaces import SearchSpace

BATCH = LOG2_BATCH_SIZE
ACT = ACTIVATION_DTYPE
LEVEL = OPTIMIZATION_LEVEL


@dataclass(frozen=True)
class Observed:
    """What the strategy needs of one trial: its params and how it went.

    `score` is the throughput of a feasible measured trial, None for anything else
    (infeasible, failed, pruned, running). `oom` marks a batch size that ran out of memory;
    `finished` is False while the trial runs. `speed` is the throughput of a trial stopped
    after warm-up as slow (not a score: neither timed in full nor evaluated).
    """

    params: dict[str, Any]
    score: float | None = None
    oom: bool = False
    finished: bool = True
    speed: float | None = None
    over_budget: bool = False  # its latency broke the study's budget (`autotune.objective`)
    #: measured in full but over the accuracy constraint
    infeasible: bool = False


FRONT = 0.5  # configs within this share of the best throughput are bases for moves
LOSING = 0.85  # a move valued under this share of the best is not proposed (not compiled)
WRITE_OFF = 2  # ... once that kind of move lost this many times (one may be noise)


def plan_next(space: SearchSpace, history: Sequence[Observed]) -> dict[str, Any] | None:
    """The params of the next trial, or None when no untried move of a measured config is
    worth running (see the module docstring)."""
    tried = [h.params for h in history]
    # Memory use and a config's latency both grow with the batch size: nothing at or above a
    # batch that ran out of memory or broke the latency budget is tried for that config.
    ooms = [h.params for h in history if h.oom or h.over_budget]
    # Configs at most as precise as one that already failed the accuracy constraint fail it
    # too (e.g. lofi after hifi2 did): not worth a trial.
    losers = [h.params for h in history if h.infeasible]
    tried += [
        m for m in _all_moves(space, history) if any(_less_precise(space, m, t) for t in losers)
    ]
    scored = sorted((h for h in history if h.score is not None), key=lambda h: -h.score)
    if not scored:  # nothing feasible yet: the start, then its moves
        start = _start(space)
        # Over a latency budget: smaller batches of what broke it come first.
        over = sorted((h.params for h in history if h.over_budget), key=lambda p: p[BATCH])
        smaller = [{**p, BATCH: p[BATCH] - step} for p in over for step in (2, 1)]
        lowest = min(_batch_exponents(space))
        smaller = [p for p in smaller if p[BATCH] >= lowest]
        for candidate in [*smaller, start, *_moves(space, start)]:
            if candidate not in tried and not any(oom_bound(candidate, o, BATCH) for o in ooms):
                return candidate
        return None
    descent = _fidelity_descent(space, scored, tried, ooms)
    if descent is not None:
        return descent
    best = scored[0].score
    ratios, seen = _move_ratios(history)
    pick: tuple[float, int, int] | None = None
    chosen: dict[str, Any] | None = None
    for rank, base in enumerate(scored):
        if base.score < FRONT * best:
            break
        if rank > 0 and base.params != _uniform(space, base.params):
            continue  # a per-layer map is refined only while it is the best
        # Per-layer deviations refine the best config only (uniform precision first).
        for order, move in enumerate(_moves(space, base.params, per_layer=rank == 0)):
            kind = _kind(base.params, move)
            # The best config climbs its own batch curve whatever other configs showed.
            own = rank == 0 and kind[0] == BATCH
            if own:
                ratio = _climb_ratio(base, history, kind[2]) if kind[2] > kind[1] else 1.0
            else:
                ratio = ratios.get(kind, 1.0)
            value = base.score * ratio
            key = (-value, rank, order)
            # Written off once it lost in two configs; after one loss (noise, a busy
            # machine) it is only tried last. A batch step carried over is written off at
            # once: the best config climbs its own batch curve anyway.
            losses = seen.get(kind, 0) + (WRITE_OFF if kind[0] == BATCH else 0)
            if (value < LOSING * best and losses >= WRITE_OFF) or (
                pick is not None and key >= pick
            ):
                continue
            if move in tried or any(oom_bound(move, o, BATCH) for o in ooms):
                continue
            pick, chosen = key, move
    return chosen


def _fidelity_descent(
    space: SearchSpace,
    scored: Sequence[Observed],
    tried: list[dict[str, Any]],
    ooms: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """In an emulated study, math fidelity one phase below the cheapest feasible fidelity so
    far, from its fastest feasible config: first, whatever the CPU measured (the emulation
    is slower at HiFi2 than at HiFi4, the card 2x faster). Ends where a fidelity failed the
    accuracy constraint (`tried` holds what that rules out) or none is left, so the study
    finds the cheapest fidelity that meets the constraint (`autotune.fidelity_verdict`)."""
    name = MATH_FIDELITY.name
    dims = {d.name: d for d in space.dimensions}
    if space.backend not in ACCURACY_ONLY_FIDELITY or name not in dims:
        return None
    scale = [f for f in FIDELITIES if f in dims[name].choices]
    feasible = [h for h in scored if h.params.get(name) in scale]
    if not feasible:
        return None
    cheapest = max(feasible, key=lambda h: (matmul_rate(h.params[name]), h.score))
    i = scale.index(cheapest.params[name])
    if i + 1 >= len(scale):
        return None
    move = {**cheapest.params, name: scale[i + 1]}
    if move in tried or any(oom_bound(move, o, BATCH) for o in ooms):
        return None
    return move


def _all_moves(space: SearchSpace, history: Sequence[Observed]) -> list[dict[str, Any]]:
    """The moves the plan may propose (of the start and of every measured config)."""
    start = _start(space)
    moves = [start, *_moves(space, start)]
    for h in history:
        if h.score is not None:
            moves += list(_moves(space, h.params))
    return moves


#: The constraints about outputs (`autotune.outcome.Scoring`): a config that breaks one is
#: beaten by none less precise. Others (e.g. a latency budget) say nothing about precision.
ACCURACY_CONSTRAINTS = ("metric_drop", "agreement")
# Dimensions that do not change a trial's outputs: batch size, trace, the trace region, streams.
_NEUTRAL = (BATCH, TRACE, TRACE_REGION_KNOB, STREAMS_NAME)


def _rank(space: SearchSpace, name: str, value: Any) -> int | None:
    """Where `value` sits on the dimension's precision scale (0 = most precise), or None
    when the dimension has no such scale (values then compare only as equal)."""
    dims = {d.name: d for d in space.dimensions}
    if name == MATH_FIDELITY.name:
        return FIDELITIES.index(value) if value in FIDELITIES else None
    d = dims.get(name)
    if d is not None and (d.members or name in (ACT, "experimental_weight_dtype")):
        return d.choices.index(value) if value in d.choices else None  # most precise first
    return None


def _less_precise(space: SearchSpace, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether `a` is at most as precise as `b` on every dimension that changes outputs,
    and equal on those without a precision scale."""
    for name, value in a.items():
        if name in _NEUTRAL or value == b.get(name):
            continue
        ra, rb = _rank(space, name, value), _rank(space, name, b.get(name))
        if ra is None or rb is None or ra < rb:
            return False
    return True


def _kind(a: dict[str, Any], b: dict[str, Any]) -> tuple[Any, ...] | None:
    """The move that turns `a` into `b`: a batch step (from, to), or one dimension set to
    a value (the activation dtype carries the uniform weights along, the compiler its
    canonical rest); None if not one move."""
    diff = {k for k in a if a[k] != b.get(k)}
    if diff == {BATCH}:
        return (BATCH, a[BATCH], b[BATCH])
    # Nothing else may differ: a pair that also differs in batch size or dtype is no move
    # (counted as one, bs256 fp32 -> bs128 eager bf16 once valued eager at 1.35x).
    if LEVEL in diff and not b[LEVEL] and diff <= {LEVEL, COMPILER.name}:
        return (LEVEL, b[LEVEL])  # to eager: the compiler goes with it (`_canonical`)
    if COMPILER.name in diff and all(
        k in (COMPILER.name, LEVEL, CHANNELS_LAST.name) or k.startswith(WEIGHT_PREFIX) for k in diff
    ):
        # It carries its canonical rest along. From eager it is a compile (often 2x), from
        # another compiler a swap (mostly within 10%): different kinds.
        return (COMPILER.name, a[COMPILER.name] if a[LEVEL] else "eager", b[COMPILER.name])
    if diff == {LEVEL}:
        # Level 0 -> 1 is a compile, 2 -> 1 drops freezing: the same target, other kinds
        # (counted as one, the ResNet's eager -> O1 at 1.95x had O1 tried at every batch).
        return (LEVEL, a[LEVEL], b[LEVEL])
    if ACT in diff and all(k == ACT or k.startswith(WEIGHT_PREFIX) for k in diff):
        return (ACT, b[ACT])
    if len(diff) == 1:
        (name,) = diff
        if name.startswith(WEIGHT_PREFIX):
            # One layer to this dtype, whichever layer; away from the activation dtype
            # (a deviation) or back to it (towards uniform) are different moves.
            return (WEIGHT_PREFIX, b[name], b[name] == b.get(ACT))
        return (name, b[name])
    return None


def _move_ratios(
    history: Sequence[Observed],
) -> tuple[dict[tuple[Any, ...], float], dict[tuple[Any, ...], int]]:
    """Per kind of move, the best throughput ratio it has shown from a feasible config
    (after/before; a failed or infeasible result counts 0, a trial stopped as slow its
    throughput at the stop), and how many times it was seen. The best, not the mean:
    dimensions interact (bf16 can lose at batch 8 and win at 1024), so a move is written
    off only where it lost every time."""
    done = [h for h in history if h.finished and not h.oom]
    best: dict[tuple[Any, ...], float] = {}
    seen: dict[tuple[Any, ...], int] = {}
    for a in done:
        if a.score is None:
            continue
        for b in done:
            kind = _kind(a.params, b.params)
            if kind is None:
                continue
            after = b.score if b.score is not None else (b.speed or 0.0)
            best[kind] = max(best.get(kind, 0.0), after / a.score)
            seen[kind] = seen.get(kind, 0) + 1
    return best, seen


def _climb_ratio(best: Observed, history: Sequence[Observed], target: int) -> float:
    """How the best config's step up to batch 2**`target` is valued (at least 1), from the
    ratio its batch curve rose by into it from the nearest smaller batch measured: beyond
    every batch it has tried, that ratio; short of the nearest larger batch tried, that
    ratio times how far the curve fell by there (a peak between the two is likely); 1
    otherwise. The switches' ratios are mostly noise (0.95-1.05 on a 2-core VM) while batch
    steps are often 2x: a curve still rising is climbed before switches that only noise
    favours, and its x4 step gets past a dip (oneDNN measured bs1024 at 0.7x bs512 and
    bs2048 at 1.4x on the MLP)."""
    others = {k: v for k, v in best.params.items() if k != BATCH}
    same = [h for h in history if {k: v for k, v in h.params.items() if k != BATCH} == others]
    e = best.params[BATCH]
    below = [h for h in same if h.score is not None and h.params[BATCH] < e]
    if not below:
        return 1.0
    rise = best.score / max(below, key=lambda h: h.params[BATCH]).score
    above = [h for h in same if h.params[BATCH] > e]
    if not above:
        return max(1.0, rise)
    nearest = min(above, key=lambda h: h.params[BATCH])
    if target < nearest.params[BATCH]:
        return max(1.0, rise * (nearest.score or 0.0) / best.score)
    return max(1.0, rise) if target > max(h.params[BATCH] for h in above) else 1.0


def _start(space: SearchSpace) -> dict[str, Any]:
    """A neutral start: middle batch size, highest precision, highest optimization level
    (compilation rarely loses at steady state), switches at their first value."""
    params: dict[str, Any] = {}
    for d in space.dimensions:
        if d.name == BATCH_SIZE:
            exps = _batch_exponents(space)
            params[BATCH] = exps[len(exps) // 2]
        elif d.name == LEVEL:
            params[d.name] = d.choices[-1]
        else:
            params[d.name] = d.choices[0]
    return _uniform(space, params)


def _batch_exponents(space: SearchSpace) -> list[int]:
    (batch,) = (d for d in space.dimensions if d.name == BATCH_SIZE)
    return [int(math.log2(b)) for b in batch.choices]


def _uniform(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """Every weight at the activation dtype where the dimension offers it."""
    act = params.get(ACT)
    out = dict(params)
    for d in space.weight_dimensions:
        out[d.name] = act if act in d.choices else d.choices[0]
    return out


def _moves(
    space: SearchSpace, inc: dict[str, Any], per_layer: bool = True
) -> Iterator[dict[str, Any]]:
    for move in _raw_moves(space, inc, per_layer):
        move = _canonical(space, move)
        if move != inc:
            yield move


def _canonical(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """One params dict per distinct model. OpenVINO builds the same model at levels 1 and 2,
    with or without channels_last and whatever the per-layer map (it takes one precision
    hint), so its configs take fixed values there; eager (level 0) compiles nothing, so its
    compiler is the first."""
    dims = {d.name: d for d in space.dimensions}
    if COMPILER.name not in dims or LEVEL not in dims:
        return params
    if not params[LEVEL]:
        return {**params, COMPILER.name: dims[COMPILER.name].choices[0]}
    if params[COMPILER.name] != OPENVINO:
        return params
    out = {**params, LEVEL: max(dims[LEVEL].choices)}
    if CHANNELS_LAST.name in dims:
        out[CHANNELS_LAST.name] = dims[CHANNELS_LAST.name].choices[0]
    return _uniform(space, out)


def _raw_moves(
    space: SearchSpace, inc: dict[str, Any], per_layer: bool = True
) -> Iterator[dict[str, Any]]:
    dims = {d.name: d for d in space.dimensions}
    exps = _batch_exponents(space)
    lo, hi = exps[0], exps[-1]

    def batch(step: int) -> Iterator[dict[str, Any]]:
        for sign in (1, -1):
            e = inc[BATCH] + sign * step
            if lo <= e <= hi:
                yield {**inc, BATCH: e}

    def flips(name: str) -> Iterator[dict[str, Any]]:
        for value in dims[name].choices if name in dims else ():
            if value != inc[name]:
                yield {**inc, name: value}

    def fidelity() -> Iterator[dict[str, Any]]:
        # An ordered scale, stepped one phase at a time, cheaper first: the largest knob on
        # a Tenstorrent card (up to 4x), tried early; ttnn's own choice after that.
        name = MATH_FIDELITY.name
        if name not in dims:
            return
        choices, value = dims[name].choices, inc[name]
        scale = [f for f in FIDELITIES if f in choices]
        if value in scale:
            i = scale.index(value)
            for j in (i + 1, i - 1):
                if 0 <= j < len(scale):
                    yield {**inc, name: scale[j]}
        for other in choices:
            if other not in scale and other != value:
                yield {**inc, name: other}

    def ordered(name: str) -> Iterator[dict[str, Any]]:
        # Streams are ordered as batch sizes are (more streams: fewer threads each, more
        # requests in flight): one step up, then down.
        if name not in dims:
            return
        choices = dims[name].choices
        i = choices.index(inc[name])
        for j in (i + 1, i - 1):
            if 0 <= j < len(choices):
                yield {**inc, name: choices[j]}

    for moved in flips(ACT):
        yield _uniform(space, moved)
    yield from fidelity()
    yield from ordered(STREAMS_NAME)
    yield from batch(2)
    yield from flips(LEVEL)
    switches = [
        d
        for d in space.dimensions
        if not d.members
        and d.name not in (ACT, LEVEL, BATCH_SIZE, MATH_FIDELITY.name, STREAMS_NAME)
    ]
    for d in switches:
        if d.only_with is None or inc.get(d.only_with):  # else it changes nothing
            yield from flips(d.name)
        elif d.name == COMPILER.name:
            # From eager, OpenVINO is one move (`_canonical` gives it its level): where
            # inductor loses to eager, the level flips alone would never reach it.
            top = {**inc, LEVEL: max(dims[LEVEL].choices)}
            yield from ({**top, COMPILER.name: v} for v in dims[d.name].choices[1:])
    yield from batch(1)
    for d in space.weight_dimensions if per_layer else ():
        yield from flips(d.name)


def observe(
    trials: Sequence[optuna.trial.FrozenTrial], objective: Objective | None = None
) -> list[Observed]:
    """Observed records from stored trials (feasible = every constraint <= 0), scored by
    the study's objective (`Objective.score`: higher is better for either)."""
    objective = objective or Objective()
    running = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    retried = retried_numbers(trials)
    out = []
    for t in trials:
        if not t.params and t.state not in running:
            continue
        metrics = TrialRecord.of(t).metrics or {}
        score = None
        named = named_constraints(t)
        if t.state == optuna.trial.TrialState.COMPLETE and t.values:
            constraints = list(t.constraints.values())
            if constraints and all(c <= 0 for c in constraints):
                score = objective.score(metrics) if metrics else _value_score(t, objective)
        status = trial_status(t, retried)
        speed = None
        if status == Status.SLOW:  # stopped after warm-up: how fast it was by then
            speed = objective.score(metrics)
        over = named.get("latency", 0) > 0 or (
            status == Status.SLOW and (objective.latency_excess(metrics) or 0) > 0
        )
        oom = status == Status.OOM
        infeasible = (
            t.state == optuna.trial.TrialState.COMPLETE
            and score is None
            and any(named.get(k, 0) > 0 for k in ACCURACY_CONSTRAINTS)
        )
        out.append(
            Observed(
                dict(t.params),
                score,
                oom,
                t.state not in running,
                speed,
                over_budget=over,
                infeasible=infeasible,
            )
        )
    return out


def _value_score(t: optuna.trial.FrozenTrial, objective: Objective) -> float | None:
    # A trial written without a record (another tool): its first objective value.
    v = t.values[0]
    if not math.isfinite(v) or v <= 0:
        return None
    return v if objective.direction == "maximize" else 1e3 / v


# What the strategy has left (`search_state`).
OPEN, WAIT, DONE = "open", "wait", "done"


def search_state(
    space: SearchSpace, trials: Sequence[optuna.trial.FrozenTrial], objective: Objective
) -> str:
    """OPEN while the strategy has a move worth running (or nothing feasible is known yet:
    the fallback samples); WAIT while it has none but trials still run, whose results may
    open new moves; DONE when nothing untried is worth compiling. The study then spends
    what is left of its budget deciding the pick, not repeating configs."""
    history = observe(trials, objective)
    if not any(h.score is not None for h in history) or plan_next(space, history) is not None:
        return OPEN
    return WAIT if any(not h.finished for h in history) else DONE


class AutotuneSampler(optuna.samplers.BaseSampler):
    """The strategy above as an Optuna sampler.

    The plan is made in `before_trial` from every trial of the study (the running ones
    included). Once no candidate is left the plan is the best config again (recorded by the
    tuner without a run). Only while nothing feasible is known and the start's moves are
    used up (every one failed or infeasible) do trials come from the fallback TPE sampler."""

    def __init__(
        self, space: SearchSpace, seed: int | None = None, objective: Objective | None = None
    ) -> None:
        self._space = space
        self._objective = objective or Objective()
        self._fallback = optuna.samplers.TPESampler(seed=seed, multivariate=True)
        self._plans: dict[int, dict[str, Any] | None] = {}

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        history = observe(others, self._objective)
        plan = plan_next(self._space, history)
        scored = [h for h in history if h.score is not None]
        if plan is None and scored:
            # Nothing untried is worth compiling. The tuner does not ask then
            # (`search_state`); only a race between hosts gets here: the best again, which
            # the tuner records as a copy of its outcome without running anything.
            plan = max(scored, key=lambda h: h.score).params
        self._plans[trial._trial_id] = plan
        self._fallback.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        if self._plans.get(trial._trial_id) is not None:
            return {}
        return self._fallback.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        if self._plans.get(trial._trial_id) is not None:
            return {}
        return self._fallback.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        plan = self._plans.get(trial._trial_id)
        if plan is not None and param_name in plan:
            return plan[param_name]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._plans.pop(trial._trial_id, None)
        self._fallback.after_trial(study, trial, state, values)


def make_sampler(
    name: str, space: SearchSpace, seed: int | None, objective: Objective | None = None
) -> optuna.samplers.BaseSampler:
    """`--sampler`: autotune (the strategy above), tpe (plain TPE), random."""
    if name == "autotune":
        return AutotuneSampler(space, seed, objective)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r} (choices: {', '.join(SAMPLERS)})")
