"""Unit tests of the plain-data parts: configs, spaces, measurement, Pareto, export, plot data."""

from __future__ import annotations

import json
import statistics

import optuna
import pytest

from autotune.analysis import best_feasible, pareto_front, trial_rows
from autotune.backends import get_backend
from autotune.config import Status, TrialConfig, TrialResult, WorkerJob
from autotune.errors import NothingFoundError
from autotune.export import export_dict, load_config
from autotune.measure import Measurement
from autotune.plots import pareto_plot_data
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
    job = WorkerJob(cfg(extras=(("channels_last", True),)), measure_seconds=0.5)
    assert WorkerJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
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
        "dtype:conv1.weight",
        "dtype:conv2.weight",
        "dtype:fc1.weight",
        "dtype:fc2.weight",
    ]
    assert space.dimensions[0].choices == tuple(2**i for i in range(13))  # 1 .. 4096
    assert "trace" not in names  # no CPU trace analogue (see backends/cpu.py)
    assert space.size() == 13 * 3 * 2 * 2 * 2**4


def test_suggest_maps_params_to_config():
    space = cpu_space()
    params = {
        "log2_batch_size": 8,
        "optimization_level": 2,
        "activation_dtype": "bf16",
        "channels_last": True,
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
        extras=(("channels_last", True),),
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


def test_study_weights_match_the_model():
    study = get_study("mnist")
    model = study.build_model()
    params = {name for name, _ in model.named_parameters()}
    assert {w.name for w in study.weights} == {n for n in params if n.endswith(".weight")}


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


# --- Pareto front, export pick, plot data ----------------------------------------------


def make_study(tmp_path, points: list[tuple[float, float]], states=None) -> optuna.Study:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}",
        study_name="s",
        directions=["maximize", "minimize"],
    )
    study.set_user_attr(
        "autotune", {"model": "mnist", "backend": "cpu", "max_accuracy_drop": MAX_DROP}
    )
    for i, (tp, drop) in enumerate(points):
        config = cfg(batch_size=2**i).to_dict()
        metrics = {
            "throughput_samples_per_s": tp,
            "throughput_iqr": 1.0,
            "latency_ms_p50": 1.0,
            "accuracy": 0.99 - drop / 100,
            "accuracy_drop": drop,
            "agreement": 1.0,
            "pcc": 1.0,
        }
        study.add_trial(
            optuna.trial.create_trial(
                values=[tp, drop],
                constraints={"accuracy_drop": drop - MAX_DROP},
                user_attrs={
                    "config": config,
                    "metrics": metrics,
                    "status": "ok",
                    "environment": {"device": "test cpu", "versions": {"torch": "x"}},
                },
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED, user_attrs={"status": "oom"}
        )
    )
    return study


POINTS = [(100.0, 0.0), (300.0, 0.2), (300.0, 0.1), (250.0, 0.4), (900.0, 2.0), (50.0, 0.0)]


def test_pareto_front_and_pick(tmp_path):
    rows = trial_rows(make_study(tmp_path, POINTS))
    front = pareto_front(rows)
    # (300, 0.1) dominates (300, 0.2) and (250, 0.4); (100, 0) dominates (50, 0).
    assert [r.number for r in front] == [4, 2, 0]
    best = best_feasible(rows)
    assert best.number == 2  # 300/s ties; the smaller drop wins; 900/s is infeasible
    assert [r.feasible for r in rows[:6]] == [True, True, True, True, False, True]


def test_pick_uses_confirmed_throughput(tmp_path):
    study = make_study(tmp_path, POINTS)
    meta = study.user_attrs["autotune"]
    # Trial 2's 300/s did not hold up (re-measured 100/s): median 200 < trial 1's 300/s.
    study.set_user_attr("autotune", {**meta, "confirmed": {"2": [100.0]}})
    rows = trial_rows(study)
    assert rows[2].confirmed_throughput == 200.0 and rows[1].confirmed_throughput == 300.0
    assert best_feasible(rows).number == 1
    d = export_dict(study)
    assert d["provenance"]["trial"] == 1
    study.set_user_attr("autotune", {**meta, "confirmed": {"2": [100.0], "1": [100.0, 120.0]}})
    assert best_feasible(trial_rows(study)).number == 3  # 250/s, unconfirmed
    assert export_dict(study)["metrics"]["throughput_measurements"] == [250.0]


def test_export_schema(tmp_path):
    d = export_dict(make_study(tmp_path, POINTS))
    assert d["schema"] == 1 and d["model"] == "mnist" and d["backend"] == "cpu"
    assert d["batch_size"] == 4 and d["optimization_level"] == 0 and d["enable_trace"] is False
    assert d["metrics"]["throughput_samples_per_s"] == 300.0
    assert d["metrics"]["accuracy_drop"] == 0.1
    assert set(d["metrics"]) >= {
        "throughput_samples_per_s",
        "throughput_iqr",
        "latency_ms_p50",
        "accuracy",
        "accuracy_drop",
        "agreement",
        "pcc",
    }
    assert d["provenance"] == {
        "study": "s",
        "trial": 2,
        "versions": {"torch": "x"},
        "device": "test cpu",
        "threads": None,
    }
    assert d["compile_options"] == {}  # level 0: eager, nothing passed to torch.compile
    assert load_config(d) == cfg(batch_size=4)


def test_export_without_feasible_trial(tmp_path):
    with pytest.raises(NothingFoundError, match="no feasible trial"):
        export_dict(make_study(tmp_path, [(900.0, 2.0)]))


def test_plot_data(tmp_path):
    rows = trial_rows(make_study(tmp_path, POINTS))
    data = pareto_plot_data(
        rows, model="mnist", backend="cpu", device="test cpu", max_accuracy_drop=MAX_DROP
    )
    assert data.title == "mnist on cpu (test cpu): 7 trials"
    assert [p.trial for p in data.feasible] == [0, 1, 2, 3, 5]
    assert [p.trial for p in data.infeasible] == [4]
    assert [(p.accuracy_drop, p.throughput) for p in data.front] == [
        (0.0, 100.0),
        (0.1, 300.0),
        (2.0, 900.0),
    ]
    assert data.pick.trial == 2 and data.pick_throughput == 300.0
    assert data.unmeasured == 1


def test_cpu_compile_options_differ_by_level():
    cpu = get_backend("cpu")
    opts = [cpu.compile_options(cfg(optimization_level=level)) for level in (0, 1, 2)]
    assert opts[0] == {}
    assert opts[1] == {"backend": "inductor", "dynamic": False}
    assert opts[2] == {"backend": "inductor", "dynamic": False, "options": {"freezing": True}}


def test_baseline_seeds_are_uniform_precision():
    from search_spaces import baseline_params

    seeds = baseline_params(cpu_space())
    # bf16 first (lowest precision), batch 64 and 256, channels_last off and on; then fp32.
    assert [
        (s["activation_dtype"], 2 ** s["log2_batch_size"], s["channels_last"]) for s in seeds
    ] == [(a, b, c) for a in ("bf16", "fp32") for b in (64, 256) for c in (False, True)]
    for s in seeds:
        assert s["optimization_level"] == 2
        assert {v for k, v in s.items() if k.startswith("dtype:")} == {s["activation_dtype"]}
        config = cpu_space().suggest(optuna.trial.FixedTrial(s))  # complete and valid params
        assert config.batch_size == 2 ** s["log2_batch_size"]
    tt = default_space(get_study("mnist"), get_backend("tt"))
    assert [s["trace"] for s in baseline_params(tt)] == [False, True, False, True]
