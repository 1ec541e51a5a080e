"""autotune's default search strategy: a pattern search over what the dimensions are,
handing over to TPE once it has converged.

Blind sampling wastes trials on this space: batch size is ordered (throughput rises, then
falls or runs out of memory, and OOM is monotone), the categorical switches mostly act
independently of each other, and a per-layer dtype map is a refinement of a uniform one.
So the strategy climbs from a neutral start (the middle batch size, every weight at the
activation dtype) one move at a time:

1. flip the activation dtype (the whole model follows: uniform precision);
2. batch size x4 / ÷4 (coarse climb), never at or above a batch that ran out of memory;
3. flip the optimization level, trace and backend switches;
4. batch size x2 / ÷2 (refine);
5. lower or raise one weight-dtype dimension (per-layer deviations).

The best feasible measured config is the incumbent; the first untried move of the
incumbent is the next trial, and a better result moves the incumbent and restarts the
list. When every move of the incumbent has been tried it is a local optimum, and TPE
(which sees every trial so far) explores the rest of the budget. Trials still running
count as tried, so parallel slots and hosts never pick the same move.

The strategy is stateless: it is recomputed from the study's trials at every ask, so it
resumes and works across hosts like any Optuna sampler.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from search_spaces import SearchSpace

BATCH = "log2_batch_size"
ACT = "activation_dtype"
LEVEL = "optimization_level"
SAMPLERS = ("autotune", "tpe", "random")


@dataclass(frozen=True)
class Observed:
    """What the strategy needs of one trial: its params and how it went.

    `score` is the throughput of a feasible measured trial, None for anything else
    (infeasible, failed, pruned, running). `oom` marks a batch size that ran out of memory;
    `finished` is False while the trial runs.
    """

    params: dict[str, Any]
    score: float | None = None
    oom: bool = False
    finished: bool = True


def plan_next(space: SearchSpace, history: Sequence[Observed]) -> dict[str, Any] | None:
    """The params of the next trial, or None once the incumbent is a local optimum."""
    tried = [h.params for h in history]
    ooms = [h.params for h in history if h.oom]
    scored = [h for h in history if h.score is not None]
    # Nothing feasible yet: the start, then its moves, until something is feasible.
    incumbent = max(scored, key=lambda h: h.score).params if scored else _start(space)
    losing = _losing_moves(history)
    moves = sorted(_moves(space, incumbent), key=lambda m: _kind(incumbent, m) in losing)
    for candidate in [incumbent, *moves]:
        if candidate in tried or _oom_bound(candidate, ooms):
            continue
        return candidate
    return None


def _kind(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, Any] | None:
    """The move that turns `a` into `b` (batch up/down, or one dimension set to a value;
    the activation dtype carries the uniform weights along), None if not a single move."""
    diff = {k for k in a if a[k] != b.get(k)}
    if diff == {BATCH}:
        return (BATCH, b[BATCH] > a[BATCH])
    if ACT in diff and all(k == ACT or k.startswith("dtype:") for k in diff):
        return (ACT, b[ACT])
    if len(diff) == 1:
        (name,) = diff
        return (name, b[name])
    return None


def _losing_moves(history: Sequence[Observed]) -> set[tuple[str, Any]]:
    """Moves that lost by more than 20% every time they were measured (a failed or
    infeasible result loses): tried last from a new incumbent, not skipped, since
    dimensions interact (bf16 can lose at batch 8 and win at 1024)."""
    done = [h for h in history if h.finished and not h.oom]
    worst: dict[tuple[str, Any], float] = {}
    for a in done:
        if a.score is None:
            continue
        for b in done:
            kind = _kind(a.params, b.params)
            if kind is not None:
                ratio = (b.score or 0.0) / a.score
                worst[kind] = max(worst.get(kind, 0.0), ratio)
    return {kind for kind, best_ratio in worst.items() if best_ratio < 0.8}


def _start(space: SearchSpace) -> dict[str, Any]:
    """A neutral start: middle batch size, highest precision, highest optimization level
    (compilation rarely loses at steady state), switches at their first value."""
    params: dict[str, Any] = {}
    for d in space.dimensions:
        if d.name == "batch_size":
            exps = [int(math.log2(b)) for b in d.choices]
            params[BATCH] = exps[len(exps) // 2]
        elif d.name == LEVEL:
            params[d.name] = d.choices[-1]
        else:
            params[d.name] = d.choices[0]
    return _uniform(space, params)


def _uniform(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """Every weight at the activation dtype where the dimension offers it."""
    act = params.get(ACT)
    out = dict(params)
    for d in space.weight_dimensions:
        out[d.name] = act if act in d.choices else d.choices[0]
    return out


def _moves(space: SearchSpace, inc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    dims = {d.name: d for d in space.dimensions}
    exps = [int(math.log2(b)) for b in dims["batch_size"].choices]
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

    for moved in flips(ACT):
        yield _uniform(space, moved)
    yield from batch(2)
    yield from flips(LEVEL)
    switches = [d.name for d in space.dimensions if not d.members and d.name not in (ACT, LEVEL)]
    for name in switches:
        if name != "batch_size":
            yield from flips(name)
    yield from batch(1)
    for d in space.weight_dimensions:
        yield from flips(d.name)


def _oom_bound(params: dict[str, Any], ooms: list[dict[str, Any]]) -> bool:
    """The same config ran out of memory at this or a smaller batch size."""
    rest = {k: v for k, v in params.items() if k != BATCH}
    return any(
        {k: v for k, v in o.items() if k != BATCH} == rest and o[BATCH] <= params[BATCH]
        for o in ooms
    )


def observe(trials: Sequence[optuna.trial.FrozenTrial]) -> list[Observed]:
    """Observed records from stored trials (feasible = every constraint <= 0)."""
    running = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    out = []
    for t in trials:
        if not t.params and t.state not in running:
            continue
        score = None
        if t.state == optuna.trial.TrialState.COMPLETE and t.values:
            constraints = list(t.constraints.values())
            if constraints and all(c <= 0 for c in constraints) and math.isfinite(t.values[0]):
                score = t.values[0]
        oom = t.user_attrs.get("status") == "oom"
        out.append(Observed(dict(t.params), score, oom, finished=t.state not in running))
    return out


class AutotuneSampler(optuna.samplers.BaseSampler):
    """The pattern search above as an Optuna sampler; TPE once it has converged.

    The plan is made in `before_trial` from every trial of the study (the running ones
    included); params the plan does not fix, and whole trials after convergence, come from
    the fallback sampler."""

    def __init__(self, space: SearchSpace, seed: int | None = None) -> None:
        self._space = space
        self._fallback = optuna.samplers.TPESampler(seed=seed, multivariate=True)
        self._plans: dict[int, dict[str, Any] | None] = {}

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        self._plans[trial._trial_id] = plan_next(self._space, observe(others))
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


def make_sampler(name: str, space: SearchSpace, seed: int | None) -> optuna.samplers.BaseSampler:
    """`--sampler`: autotune (the strategy above), tpe (plain TPE), random."""
    if name == "autotune":
        return AutotuneSampler(space, seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r} (choices: {', '.join(SAMPLERS)})")
