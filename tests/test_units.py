"""Unit tests of the plain-data parts: configs, spaces, measurement, Pareto, export, plot data."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import optuna
import pytest

from autotune.analysis import (
    best_feasible,
    confirmation_candidates,
    pareto_front,
    remeasurement_entry,
    trial_rows,
)
from autotune.backends import get_backend
from autotune.backends.cpu import HAS_OPENVINO
from autotune.backends.streams import stream_choices
from autotune.errors import NothingFoundError
from autotune.export import export_dict, load_config
from autotune.host import usable_cores
from autotune.measure import Measurement
from autotune.plots import pareto_plot_data
from autotune.records import (
    StudyRecord,
    TrialRecord,
    finished_trial,
    named_constraints,
    read_study,
    write_study,
)
from autotune.wire import Status, TrialConfig, TrialJob, TrialResult
from search_spaces import SearchSpace, SpaceError, default_space
from studies import get_study

MAX_DROP = 0.5


def cfg(**kw) -> TrialConfig:
    base = {"model": "mnist", "backend": "cpu", "batch_size": 64}
    return TrialConfig(**{**base, **kw})


# --- configs ---------------------------------------------------------------------------


def test_config_is_order_insensitive_and_round_trips():
    a = cfg(weight_dtypes=(("fc1.weight", "bf16"), ("conv1.weight", "fp32")))
    b = cfg(weight_dtypes=(("conv1.weight", "fp32"), ("fc1.weight", "bf16")))
    assert a == b and hash(a) == hash(b) and a.key() == b.key()
    assert TrialConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.with_batch_size(128) != a and a.with_batch_size(128).batch_size == 128


def test_job_and_result_round_trip(tmp_path):
    job = TrialJob(cfg(knobs=(("channels_last", True),)), measure_seconds=0.5)
    assert TrialJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    result = TrialResult(Status.OOM, "out", metrics={"x": 1.0})
    result.write(tmp_path / "r.json")
    assert TrialResult.read(tmp_path / "r.json") == result
    bad = result.to_dict() | {"schema": 99}
    with pytest.raises(ValueError, match="schema"):
        TrialResult.from_dict(bad)


# --- search spaces ---------------------------------------------------------------------


def cpu_space(max_batch: int | None = None) -> SearchSpace:
    return default_space(get_study("mnist"), get_backend("cpu"), max_batch)


def test_default_cpu_space():
    space = cpu_space()
    names = [d.name for d in space.dimensions]
    assert names == [
        "batch_size",
        "optimization_level",
        "activation_dtype",
        "channels_last",
        "streams",
        *(["compiler"] if HAS_OPENVINO else []),  # the [openvino] extra adds it
        "dtype:conv1.weight",
        "dtype:conv2.weight",
        "dtype:fc1.weight",
        "dtype:fc2.weight",
    ]
    assert space.dimensions[0].choices == tuple(2**i for i in range(13))  # 1 .. 4096
    assert "trace" not in names  # no CPU trace analogue (see backends/cpu.py)
    streams = {d.name: d for d in space.dimensions}["streams"].choices
    assert streams == stream_choices(usable_cores())  # 1, 2, 4 ... up to this host's cores
    compilers = 2 if HAS_OPENVINO else 1
    assert space.size() == 13 * 3 * 2 * 2 * len(streams) * compilers * 2**4


def test_stream_choices_are_powers_of_two_up_to_the_cores():
    assert stream_choices(1) == (1,)
    assert stream_choices(2) == (1, 2)
    assert stream_choices(6) == (1, 2, 4)
    assert stream_choices(16) == (1, 2, 4, 8, 16)


def test_suggest_maps_params_to_config():
    space = cpu_space()
    params = {
        "log2_batch_size": 8,
        "optimization_level": 2,
        "activation_dtype": "bf16",
        "channels_last": True,
        "streams": 1,
        "compiler": "inductor",  # asked for only where the space has it
        "dtype:conv1.weight": "fp32",
        "dtype:conv2.weight": "bf16",
        "dtype:fc1.weight": "bf16",
        "dtype:fc2.weight": "fp32",
    }
    config = space.suggest(optuna.trial.FixedTrial(params))
    assert config == cfg(
        batch_size=256,
        optimization_level=2,
        activation_dtype="bf16",
        knobs=(
            ("channels_last", True),
            ("streams", 1),
            *((("compiler", "inductor"),) if HAS_OPENVINO else ()),
        ),
        weight_dtypes=(
            ("conv1.weight", "fp32"),
            ("conv2.weight", "bf16"),
            ("fc1.weight", "bf16"),
            ("fc2.weight", "fp32"),
        ),
    )


def test_narrowing():
    space = cpu_space().narrowed(
        {
            "batch_size": {"min": 16, "max": 64},
            "optimization_level": [2, 1],
            "weight_dtypes": {"fc*": ["bf16"]},
        }
    )
    dims = {d.name: d.choices for d in space.dimensions}
    assert dims["batch_size"] == (16, 32, 64)
    assert dims["optimization_level"] == (1, 2)  # the backend's order is kept
    assert dims["dtype:fc1.weight"] == dims["dtype:fc2.weight"] == ("bf16",)
    assert dims["dtype:conv1.weight"] == ("fp32", "bf16")
    assert space.signature() != cpu_space().signature()
    with pytest.raises(SpaceError, match="consecutive powers of two"):
        cpu_space().narrowed({"batch_size": [16, 64]})
    with pytest.raises(SpaceError, match="non-empty list"):
        cpu_space().narrowed({"optimization_level": []})


# --- measurement -----------------------------------------------------------------------


def test_measurement_statistics():
    blocks = (0.10, 0.13, 0.08, 0.30, 0.10)
    m = Measurement(blocks, iters_per_block=10, batch_size=32)
    per_block = [320 / t for t in blocks]
    assert m.throughput == pytest.approx(statistics.median(per_block))
    q = statistics.quantiles(per_block, n=4, method="inclusive")
    assert m.throughput_iqr == pytest.approx(q[2] - q[0])
    assert m.noisy  # IQR 738 on a median of 3200
    assert not Measurement((0.10, 0.101, 0.099, 0.10, 0.30), 10, 32).noisy  # one outlier only
    iters = tuple(0.001 * i for i in range(1, 101))
    m = Measurement((0.0505,), 100, 32, iters)
    assert m.latency_ms(0.5) == pytest.approx(50.5)
    assert m.latency_ms(0.95) == pytest.approx(95.05)


def test_stored_figures_keep_six_significant_digits():
    # Full float digits made a trial's metrics 620 characters long in optuna-dashboard.
    m = Measurement((0.0123456789, 0.0123456781, 0.0123456787), 7, 33)
    stored = m.summary()
    assert stored["throughput_samples_per_s"] == float(f"{m.throughput:.6g}")
    assert stored["throughput_samples_per_s"] != m.throughput
    assert all(len(repr(v)) <= 12 for v in stored.values())
    assert stored["throughput_ci_lo"] <= stored["throughput_samples_per_s"]


def test_measurement_merge_pools_blocks():
    a = Measurement((0.10, 0.10, 0.10), iters_per_block=10, batch_size=32)  # 3200/s
    b = Measurement((0.04, 0.05), iters_per_block=2, batch_size=32)  # 1600/s, 1280/s
    merged = Measurement.merge([a, b])
    assert merged.iters_per_block == 1 and merged.batch_size == 32
    assert sorted(merged.block_throughputs) == pytest.approx([1280, 1600, 3200, 3200, 3200])
    assert merged.throughput == pytest.approx(3200)  # pooled; the median of medians is 2240
    with pytest.raises(ValueError, match="batch sizes"):
        Measurement.merge([a, Measurement((0.1,), 1, 64)])


# --- Pareto front, export pick, plot data ----------------------------------------------


def make_study(tmp_path, points: list[tuple[float, float]], states=None) -> optuna.Study:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}",
        study_name="s",
        directions=["maximize", "minimize"],
    )
    options = {"model": "mnist", "backend": "cpu", "max_accuracy_drop": MAX_DROP}
    write_study(study, StudyRecord(options=options))
    for i, (tp, drop) in enumerate(points):
        config = cfg(batch_size=2**i).to_dict()
        metrics = {
            "throughput_samples_per_s": tp,
            "throughput_iqr": 1.0,
            "latency_ms_p50": 1.0,
            "accuracy": 0.99 - drop / 100,
            "metric_drop": drop,
            "agreement": 1.0,
            "pcc": 1.0,
        }
        environment = {"device": "test cpu", "versions": {"torch": "x"}}
        record = TrialRecord(status="ok", config=config, metrics=metrics, environment=environment)
        study.add_trial(
            finished_trial(record, values=[tp, drop], constraints={"metric_drop": drop - MAX_DROP})
        )
    oom = TrialRecord(status="oom")
    study.add_trial(finished_trial(oom, state=optuna.trial.TrialState.PRUNED))
    return study


POINTS = [(100.0, 0.0), (300.0, 0.2), (300.0, 0.1), (250.0, 0.4), (900.0, 2.0), (50.0, 0.0)]


def test_pareto_front_and_pick(tmp_path):
    rows = trial_rows(make_study(tmp_path, POINTS))
    front = pareto_front(rows)
    # (300, 0.1) dominates (300, 0.2) and (250, 0.4); (100, 0) dominates (50, 0).
    assert [r.number for r in front] == [4, 2, 0]
    best = best_feasible(rows)
    # 300/s twice: tied (no blocks stored: the intervals are the figures), so the tie-break
    # picks the smaller batch (trial 1, batch 2) over the smaller drop; 900/s is infeasible.
    assert best.number == 1
    assert [r.feasible for r in rows[:6]] == [True, True, True, True, False, True]


def approx(expected):
    """Stored block times keep 6 significant digits."""
    return pytest.approx(expected, rel=1e-5)


def remeasured(throughput: float, batch_size: int, blocks: int = 20) -> dict:
    """A stored re-measurement: `blocks` blocks of 2 iterations, all at `throughput` (enough
    blocks that the 95% interval of the pooled median excludes the trial's one first block)."""
    return remeasurement_entry([2 * batch_size / throughput] * blocks, 2)


def test_pick_is_always_a_remeasured_trial(tmp_path):
    study = make_study(tmp_path, POINTS)  # trial i runs batch 2**i; no blocks stored
    record = read_study(study)

    def confirm(entries: dict[int, list]) -> list:
        confirmed = {str(k): v for k, v in entries.items()}
        write_study(study, replace(record, confirmed=confirmed))
        return trial_rows(study)

    rows = trial_rows(study)
    assert [r.number for r in confirmation_candidates(rows, 3)] == [2, 1, 3]  # top 3 first
    assert best_feasible(rows).number == 1 and not best_feasible(rows).confirmed  # tie-break
    assert confirmation_candidates(rows, 0) == []  # --confirm 0: no re-measurement

    # All three re-measure below trial 0's single 100/s. Blocks pool: trial 2's one 300/s
    # figure and five blocks at 20/s have median 20 (a median of medians would say 160).
    entries = {2: [remeasured(20, 4)], 1: [remeasured(30, 2)], 3: [remeasured(40, 8)]}
    rows = confirm(entries)
    assert rows[2].confirmed_throughput == approx(20.0)
    assert rows[2].confirmations == approx((20.0,))
    # The pick stays a re-measured trial (trial 3, 40/s); trials 0 and 5, whose single
    # first measurements (100/s, 50/s) are above it, are re-measured next, in one round.
    assert best_feasible(rows).number == 3
    assert [r.number for r in confirmation_candidates(rows, 3)] == [0, 5]

    # Trial 0's re-measurement fails: it is not tried again and cannot win; next is 5 (50/s).
    rows = confirm({**entries, 0: [{"status": "timeout", "message": "slow"}]})
    assert [r.number for r in confirmation_candidates(rows, 3)] == [5]
    assert best_feasible(rows).number == 3

    # Trial 0 re-measures at 90/s: 100 and 5 x 90 pool to 90 > 40. It is the pick, confirmed,
    # and nothing is left to re-measure (trial 5's 50/s is below 90).
    rows = confirm({**entries, 0: [remeasured(90, 1)]})
    best = best_feasible(rows)
    assert best.number == 0 and best.confirmed
    assert best.confirmed_throughput == approx(90.0)
    assert confirmation_candidates(rows, 3) == []
    d = export_dict(study)
    assert d["provenance"]["trial"] == 0
    assert d["metrics"]["throughput_samples_per_s"] == approx(90.0)
    assert d["metrics"]["throughput_measurements"] == approx([100.0, 90.0])
    plot = pareto_plot_data(rows, model="mnist", backend="cpu", device="x", max_metric_drop=0.5)
    assert plot.pick.trial == 0 and plot.pick_throughput == approx(90.0)


def test_remeasurements_pool_with_the_trials_own_blocks(tmp_path):
    study = make_study(tmp_path, POINTS[:1])
    trial = study.trials[0]
    study.add_trial(
        finished_trial(
            replace(TrialRecord.of(trial), iters_per_block=2),
            values=trial.values,
            constraints=named_constraints(trial),
            block_times=[0.02] * 3,
        )
    )  # trial 2 (after make_study's pruned trial 1): batch 1, three blocks at 100/s
    record = read_study(study)
    write_study(study, replace(record, confirmed={"2": [remeasured(80, 1, blocks=2)]}))
    row = trial_rows(study)[2]
    assert row.first.throughput == approx(100.0) and row.confirmed
    # 3 blocks at 100/s and 2 at 80/s: pooled median 100 (the median of medians is 90).
    assert row.confirmed_throughput == approx(100.0)
    stored = read_study(study).confirmed["2"][0]
    assert stored == {"iters_per_block": 2, "block_times": [0.025, 0.025]}


# As POINTS, without the tie at 300/s: trial 2 is the pick.
DISTINCT = [(100.0, 0.0), (290.0, 0.2), (300.0, 0.1), (250.0, 0.4), (900.0, 2.0), (50.0, 0.0)]


def test_export_schema(tmp_path):
    d = export_dict(make_study(tmp_path, DISTINCT))
    assert d["schema"] == 5 and "knobs" in d and d["model"] == "mnist" and d["backend"] == "cpu"
    assert d["batch_size"] == 4 and d["optimization_level"] == 0 and d["enable_trace"] is False
    assert d["metrics"]["throughput_samples_per_s"] == 300.0
    assert d["metrics"]["metric_drop"] == 0.1
    assert set(d["metrics"]) >= {
        "throughput_samples_per_s",
        "throughput_iqr",
        "latency_ms_p50",
        "accuracy",
        "metric_drop",
        "agreement",
        "pcc",
    }
    assert d["provenance"] == {
        "study": "s",
        "trial": 2,
        "versions": {"torch": "x"},
        "device": "test cpu",
        "threads": None,
        "host": None,
        "cpu_count": None,
    }
    # Schema 2: how it was measured, for `autotune verify` (this study stored no options).
    assert set(d["protocol"]) == {
        "measure_seconds",
        "warmup_iters",
        "eval_limit",
        "memory_limit_bytes",
        "timeout_s",
        "latency_percentile",
        "max_latency_ms",
        "objective",
        "latency_rule",
    }
    # Schema 5: the objective, the budget (none here), and how the pick was decided: trial 2
    # at 300/s is ahead of the next (trial 1, 290/s), their single figures not overlapping.
    assert d["objective"]["kind"] == "throughput"
    assert d["constraint"]["max_latency_ms"] is None
    assert d["constraint"]["latency_percentile"] == 95
    assert d["decision"]["separated"] and d["decision"]["tied_with"] == []
    assert d["decision"]["runner_up"]["trial"] == 1
    assert d["metrics"]["throughput_ci_95"] == [300.0, 300.0]
    assert d["compile_options"] == {}  # level 0: eager, nothing passed to torch.compile
    assert load_config(d) == cfg(batch_size=4)


def test_export_without_feasible_trial(tmp_path):
    with pytest.raises(NothingFoundError, match="no feasible trial"):
        export_dict(make_study(tmp_path, [(900.0, 2.0)]))


def test_plot_data(tmp_path):
    rows = trial_rows(make_study(tmp_path, DISTINCT))
    data = pareto_plot_data(
        rows, model="mnist", backend="cpu", device="test cpu", max_metric_drop=MAX_DROP
    )
    assert data.title == "mnist on cpu (test cpu): 7 trials"
    assert [p.trial for p in data.feasible] == [0, 1, 2, 3, 5]
    assert [p.trial for p in data.infeasible] == [4]
    assert [(p.metric_drop, p.throughput) for p in data.front] == [
        (0.0, 100.0),
        (0.1, 300.0),
        (2.0, 900.0),
    ]
    assert data.pick.trial == 2 and data.pick_throughput == 300.0
    assert data.unmeasured == 1


def test_autotune_sampler_starts_from_a_neutral_uniform_config():
    from autotune.sampler import plan_next

    start = plan_next(cpu_space(), [])
    config = cpu_space().suggest(optuna.trial.FixedTrial(start))  # complete and valid params
    assert config.batch_size == 64 and config.optimization_level == 2
    assert set(config.weight_dtype_map.values()) == {config.activation_dtype} == {"fp32"}


def test_study_options_read_studies_stored_under_the_old_names():
    """The fields took their flags' names; a study stored before still resumes (worker)."""
    from autotune.records import StudyRecord
    from autotune.study_options import StudyOptions

    old = {"model": "mnist", "stop_ratio": 0.0, "timeout_s": 20.0, "memory_limit_bytes": 2**30}
    old |= {"sensitivity_starting_points": False}
    opts = StudyOptions.from_study(StudyRecord(options=old), heartbeat=4)
    assert (opts.stop_slower, opts.timeout_per_trial, opts.memory_limit) == (0.0, 20.0, 2**30)
    assert not opts.starting_points and opts.heartbeat == 4


def test_every_study_flag_is_its_option():
    """The parser is generated from StudyOptions: each flag's dest is a field of that name."""
    from dataclasses import fields

    from autotune.cli import build_parser
    from autotune.study_options import StudyOptions

    args = build_parser().parse_args(["study", "--model", "mnist", "--memory-limit", "2G"])
    names = {f.name for f in fields(StudyOptions)} - {"warmup_iters"}  # no flag
    assert names <= set(vars(args))
    assert args.memory_limit == 2**31 and args.stop_slower == 3.0 and args.starting_points
