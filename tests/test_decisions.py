"""Deciding where the measurements can tell (intervals, ties, the tie-break, convergence)
and the latency budget's rules, on constructed measurements: what the real studies do
with them is in tests/test_latency_e2e.py."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import time

import optuna
import pytest

from autotune.analysis import (
    SLOWER_THAN_BEFORE,
    TrialRow,
    confirmation_candidates,
    decide,
    slower_than_before,
    within_noise,
)
from autotune.backends import get_backend
from autotune.child.load import BUSY_CORES, LoadProbe
from autotune.child.trial import SETTLED_SHARE, _stopped_after_warmup, warm_enough
from autotune.measure import Measurement, min_iterations, quantile_ci
from autotune.objective import Objective
from autotune.outcome import Scoring
from autotune.sampler import BATCH, DONE, OPEN, WAIT, Observed, plan_next, search_state
from autotune.wire import TrialConfig, TrialJob
from search_spaces import default_space
from studies import get_study


@pytest.mark.parametrize(("n", "q"), [(5, 0.5), (21, 0.5), (60, 0.5), (200, 0.95), (1000, 0.99)])
def test_quantile_interval_covers_the_true_quantile_95_percent_of_the_time(n, q):
    rng = random.Random(n)
    true = -math.log(1 - q)  # exponential(1): skewed, as latencies are
    runs = 400
    hits = 0
    for _ in range(runs):
        lo, hi = quantile_ci([rng.expovariate(1.0) for _ in range(n)], q)
        hits += lo <= true <= hi
    # Distribution-free: at least the nominal level, up to Monte-Carlo error (+-2.2%);
    # 5 values only give [min, max], 93.75% for the median.
    assert hits / runs >= (0.9 if n == 5 else 0.925)


def test_latency_percentile_needs_ten_iterations_beyond_it():
    assert min_iterations(95) == 200 and min_iterations(99) == 1000 and min_iterations(50) == 20


def m(throughput: float, batch: int, blocks: int = 20, spread: float = 0.0) -> Measurement:
    """`blocks` one-iteration blocks around `throughput` (+-spread, evenly)."""
    tps = [throughput * (1 + spread * (2 * i / max(1, blocks - 1) - 1)) for i in range(blocks)]
    return Measurement(tuple(batch / t for t in tps), 1, batch)


def row(number: int, first: Measurement, *again: Measurement, level: int = 0) -> TrialRow:
    config = TrialConfig("mnist", "cpu", first.batch_size, optimization_level=level).to_dict()
    return TrialRow(
        number=number,
        state="COMPLETE",
        status="ok",
        message="",
        config=config,
        metrics={"throughput_samples_per_s": first.throughput, "metric_drop": 0.0},
        feasible=True,
        first=first,
        remeasurements=again,
        remeasure_attempts=len(again),
    )


def test_separated_pick_and_its_line():
    a = row(3, m(1000, 256, spread=0.02), m(1010, 256, spread=0.02))
    b = row(7, m(800, 64, spread=0.02), m(790, 64, spread=0.02))
    d = decide([a, b])
    assert d.pick is a and d.separated and d.runner_up is b
    assert d.summary().startswith("#3 is ahead of the next (#7) by 2")  # ~25% ahead
    assert "95% CI" in d.summary() and "samples/s" in d.summary()


def test_ties_go_to_the_smaller_batch_then_the_lower_level():
    leader = row(1, m(1000, 1024, spread=0.1), m(1000, 1024, spread=0.1), level=2)
    small = row(2, m(980, 256, spread=0.1), m(990, 256, spread=0.1), level=2)
    same_batch_lower_level = row(4, m(970, 256, spread=0.1), m(975, 256, spread=0.1), level=1)
    far = row(5, m(400, 16, spread=0.01), m(400, 16, spread=0.01))
    d = decide([leader, small, same_batch_lower_level, far])
    assert d.leader is leader and {r.number for r in d.tied} == {2, 4}
    assert d.pick is same_batch_lower_level  # batch 256, then level 1 before level 2
    assert d.runner_up is far and not d.separated
    assert d.summary().startswith("#4 is tied within noise with #1 and #2")


def test_ties_are_remeasured_until_separated_or_settled_as_equivalent():
    leader = row(1, m(1000, 256, spread=0.1), m(1000, 256, spread=0.1))
    close = row(2, m(990, 64, spread=0.1), m(990, 64, spread=0.1))
    # Tied after two measurements each: both again, the least measured first.
    assert [r.number for r in confirmation_candidates([leader, close], 3)] == [1, 2]
    # Three measurements each within 3% of each other: a tie, settled; nothing more to do.
    leader3 = row(1, *leader.remeasurements, m(1000, 256, spread=0.1), m(1000, 256, spread=0.1))
    close3 = row(2, m(990, 64, spread=0.1), m(990, 64, spread=0.1), m(990, 64, spread=0.1))
    assert within_noise(leader3, close3)
    assert confirmation_candidates([leader3, close3], 3) == []
    # Narrow intervals apart: separated, nothing to do.
    apart = row(2, m(900, 64, spread=0.01), m(900, 64, spread=0.01))
    sharp = row(1, m(1000, 256, spread=0.01), m(1000, 256, spread=0.01))
    assert confirmation_candidates([sharp, apart], 3) == []


def test_an_unconfirmed_trial_within_noise_of_the_leader_is_remeasured():
    leader = row(1, m(1000, 256, spread=0.05), m(1000, 256, spread=0.05))
    unconfirmed = row(2, m(1020, 64, blocks=5, spread=0.05))
    assert [r.number for r in confirmation_candidates([leader, unconfirmed], 1)] == [2]


def test_objective_scores_and_the_latency_constraint():
    tp, lat = Objective(), Objective("latency", 99, max_latency_ms=5.0)
    metrics = {"throughput_samples_per_s": 2000.0, "latency_ms_p99": 4.0, "metric_drop": 0.1}
    assert tp.value(metrics) == 2000.0 and tp.score(metrics) == 2000.0
    assert lat.value(metrics) == 4.0 and lat.score(metrics) == 250.0  # batches/s
    assert tp.latency_excess(metrics) is None and lat.latency_excess(metrics) == -1.0
    assert lat.latency_excess({}) == math.inf  # no latency figure: over the budget
    assert Objective.of({}) == Objective()  # studies stored before objectives
    scoring = Scoring(0.5, objective=lat)
    assert scoring.constraints(metrics) == {"metric_drop": -0.4, "latency": -1.0}
    assert scoring.values(metrics) == [4.0, 0.1]
    assert Scoring(0.5).constraints(metrics) == {"metric_drop": -0.4}


def test_a_trial_clearly_over_the_budget_stops_after_warmup():
    job = TrialJob(TrialConfig("mnist", "cpu", 64), latency_budget_ms=10.0)
    assert _stopped_after_warmup(job, 1e4, 11.0) is None  # within noise of it: timed
    assert "over the latency budget of 10 ms" in _stopped_after_warmup(job, 1e4, 13.0)
    assert _stopped_after_warmup(TrialJob(job.config), 1e4, 1e6) is None  # no budget


def cpu_space():
    return default_space(get_study("mnist"), get_backend("cpu")).narrowed(
        {"weight_dtypes": {"*": ["fp32"]}, "activation_dtype": ["fp32"]}
    )


def test_no_batch_at_or_above_one_over_the_budget_and_smaller_ones_first():
    space = cpu_space()
    start = plan_next(space, [])
    over = Observed(start, None, over_budget=True)
    first = plan_next(space, [over])
    assert first == {**start, BATCH: start[BATCH] - 2}  # a quarter of the batch first
    fits = Observed(first, 100.0)
    history = [over, fits]
    for _ in range(30):
        params = plan_next(space, history)
        if params is None:
            break
        same = {k: v for k, v in params.items() if k != BATCH} == {
            k: v for k, v in start.items() if k != BATCH
        }
        assert not (same and params[BATCH] >= start[BATCH])
        history.append(Observed(params, 50.0))


def test_search_state_open_wait_done():
    """In a real Optuna study driven by the strategy: OPEN while it has moves, WAIT while
    it has none but a trial runs, DONE once nothing is left (no copy is ever asked for)."""
    from autotune.sampler import make_sampler

    space = default_space(get_study("mnist"), get_backend("cpu")).narrowed(
        {"batch_size": {"min": 16, "max": 64}, "weight_dtypes": {"*": ["fp32"]}}
    )
    study = optuna.create_study(directions=["maximize"], sampler=make_sampler("autotune", space, 0))
    objective = Objective()
    states, seen = [], []
    for _ in range(space.size()):
        state = search_state(space, study.get_trials(), objective)
        states.append(state)
        if state == DONE:
            break
        trial = study.ask()
        space.suggest(trial)
        seen.append(dict(trial.params))
        if state == OPEN and len(seen) > 1:
            # While this one runs, the strategy may have nothing else: then it waits.
            assert search_state(space, study.get_trials(), objective) in (OPEN, WAIT)
        trial.set_constraint("metric_drop", -1.0)
        study.tell(trial, [1000.0 / (1 + abs(trial.params[BATCH] - 5))])
    assert states[-1] == DONE and set(states[:-1]) == {OPEN}
    assert len(seen) == len({tuple(sorted(p.items())) for p in seen})  # no repeats
    running = study.ask()  # a trial still running: its result may open new moves
    running.suggest_int(BATCH, 4, 6)
    assert search_state(space, study.get_trials(), objective) == WAIT


def test_load_probe_sees_another_process_using_a_core():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        probe = LoadProbe.start()
        time.sleep(1.0)
        assert probe.others_cores() > BUSY_CORES
    finally:
        busy.kill()
        busy.wait()


def test_a_busy_warm_up_does_not_stop_a_trial_as_slow(tmp_path):
    """Beside two processes spinning (a real load on this 2-core machine), a trial whose
    warm-up is under the stop-below line is timed anyway, not stopped as slow: the warm-up
    figure is distorted there. (On a quiet machine the same job stops after warm-up: not
    asserted, as this test cannot know the machine is quiet.)"""
    from autotune.jobs import fp32_reference
    from autotune.launch.runner import RunnerSettings, run_job
    from autotune.wire import Status

    settings = RunnerSettings(timeout_s=300, cache_dir=tmp_path)
    ref = fp32_reference("mnist", 64, settings, tmp_path)
    job = TrialJob(
        TrialConfig("mnist", "cpu", 16),
        measure_seconds=0.3,
        warmup_iters=3,
        warmup_seconds=0.3,
        reference_path=str(ref.path),
        reference_metric=ref.metric_value,
        eval_limit=64,
        stop_below=1e12,  # every warm-up is under it
    )
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        result = run_job(job, settings)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert result.status == Status.OK, result.message
    assert result.metrics["host_load_cores"] > BUSY_CORES


def test_a_remeasurement_slower_than_before_is_named():
    before = m(10_000, 64, spread=0.02)
    assert slower_than_before(None, m(1_000, 64)) is None  # nothing earlier to compare
    assert slower_than_before(before, m(9_500, 64)) is None  # a little slower: noise
    assert slower_than_before(before, m(12_000, 64)) is None  # faster is never distorted
    # Outside the interval but within SLOWER_THAN_BEFORE: a drift, not a distortion.
    assert slower_than_before(before, m(SLOWER_THAN_BEFORE * 10_000 + 100, 64)) is None
    why = slower_than_before(before, m(5_000, 64))
    assert why is not None and "0.50x its earlier 10,000" in why


def test_a_warm_up_ends_once_iteration_times_settle():
    job = TrialJob(TrialConfig("mnist", "cpu", 64))  # warm-up 3 iterations, 0.5 s at most
    settled = [2.0] + [0.01] * 20  # the compile, then steady iterations
    floor = SETTLED_SHARE * job.warmup_seconds
    assert not warm_enough(job, settled[:2], 1.0)  # fewer than warmup_iters
    assert not warm_enough(job, settled, floor - 0.01)  # not before the floor
    assert warm_enough(job, settled, floor)  # settled past the floor: done early
    # Still getting faster (a cache or clock settling): on until warmup_seconds.
    falling = [2.0] + [0.02 * 0.95**i for i in range(20)]
    assert not warm_enough(job, falling, job.warmup_seconds - 0.01)
    assert warm_enough(job, falling, job.warmup_seconds)
    # Too few iterations to compare two windows: the time rule alone.
    assert not warm_enough(job, [2.0, 0.1, 0.1, 0.1], job.warmup_seconds - 0.01)


def test_drift_compares_the_halves_of_a_timing():
    steady = Measurement((0.01,) * 8, 1, 64)
    assert steady.drift == 0.0
    slowing = Measurement((0.01,) * 4 + (0.02,) * 4, 1, 64)  # half the throughput later
    assert slowing.drift == pytest.approx(-0.5)
    assert Measurement((0.01,) * 3 + (0.02,) * 2, 1, 64).drift == 0.0  # too few blocks


def test_a_timing_whose_throughput_drifts_is_timed_again():
    """A step that gets 2x slower 50 ms into the first timing (as when another guest on the
    host starts, which /proc/stat cannot show) and is steady after: the first timing
    drifts, it is timed again after the pause, and the steady timing is kept and named."""
    from autotune.child.trial import DRIFT_RATIO, _disturbed_message, _measure_quietly, _Timing

    start: list[float] = []

    def step():
        now = time.perf_counter()
        start.append(start[0] if start else now)
        time.sleep(0.002 if 0.05 <= now - start[0] < 0.5 else 0.001)

    job = TrialJob(TrialConfig("mnist", "cpu", 16), measure_seconds=0.3)
    taken = _measure_quietly([step], get_backend("cpu"), job, 0.001)
    assert len(taken) == 2
    assert taken[0].measurement.drift < -DRIFT_RATIO
    kept = min(taken, key=_Timing.badness)
    if not any(t.busy for t in taken):  # other load on this machine would be named too
        assert kept is taken[1] and abs(kept.measurement.drift) <= DRIFT_RATIO
    line = _disturbed_message(taken, kept)
    assert "block throughput drifted -" in line
    assert "timed 2 times, kept the least disturbed" in line
    steady = _measure_quietly([lambda: time.sleep(0.001)], get_backend("cpu"), job, 0.001)
    assert len(steady) == 1 or steady[0].busy  # timed once unless the machine was busy
