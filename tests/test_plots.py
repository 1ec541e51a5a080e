"""The Pareto plot as data, at the data's extremes (one trial, nothing feasible, everything
failed, throughputs spanning decades, a NaN trial scored as a total loss), and drawing each
case without a traceback. Trials are real Optuna trials in a real SQLite file."""

from __future__ import annotations

import io

import optuna
import pytest
from PIL import Image

from autotune.analysis import trial_rows
from autotune.cli.views import plot_table
from autotune.plots import ParetoPlotData, draw, pareto_plot_data, render
from autotune.records import TrialRecord, finished_trial

MAX_DROP = 0.5


def study_of(tmp_path, measured: list[tuple[float, float]], failed: list[str] = ()):
    """Measured (throughput, drop) trials, then failed trials with the given statuses."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"]
    )
    for i, (tp, drop) in enumerate(measured):
        record = TrialRecord(
            status="ok",
            config={"model": "mnist", "backend": "cpu", "batch_size": 2**i},
            metrics={"throughput_samples_per_s": tp, "metric_drop": drop},
        )
        study.add_trial(
            finished_trial(record, values=[tp, drop], constraints={"metric_drop": drop - MAX_DROP})
        )
    for status in failed:
        state = optuna.trial.TrialState.PRUNED if status == "oom" else optuna.trial.TrialState.FAIL
        record = TrialRecord(status=status, message=f"{status} on purpose")
        study.add_trial(finished_trial(record, state=state))
    return study


def data_of(study) -> ParetoPlotData:
    return pareto_plot_data(
        trial_rows(study), model="mnist", backend="cpu", device="test cpu", max_metric_drop=0.5
    )


def assert_draws(data: ParetoPlotData, tmp_path) -> None:
    """PNG and SVG come out, and the PNG is not a blank canvas."""
    png = render(data, "png")
    img = Image.open(io.BytesIO(png)).convert("L")
    assert img.size[0] > 400 and img.getextrema()[0] < 100  # dark ink: text, axes, points
    draw(data, tmp_path / "p.svg")
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()


def test_one_trial(tmp_path):
    data = data_of(study_of(tmp_path, [(1234.0, 0.1)]))
    assert [p.trial for p in data.feasible] == [0] and data.infeasible == []
    assert [p.trial for p in data.front] == [0]
    assert data.pick.trial == 0 and data.pick_throughput == 1234.0
    assert data.log_y is False  # one value spans no decade
    assert data.message is None and data.off_scale == [] and data.x_max is None
    assert_draws(data, tmp_path)


def test_no_feasible_trial(tmp_path):
    data = data_of(study_of(tmp_path, [(500.0, 0.9), (900.0, 1.5)], failed=["crash"]))
    assert data.feasible == [] and [p.trial for p in data.infeasible] == [0, 1]
    assert data.pick is None and data.pick_throughput is None
    assert [p.trial for p in data.front] == [0, 1]  # the trade-off exists, none is allowed
    assert data.unmeasured == 1 and data.failures == {"crash": 1}
    assert data.message is None
    assert_draws(data, tmp_path)


def test_all_trials_failed(tmp_path):
    data = data_of(study_of(tmp_path, [], failed=["crash", "oom", "crash", "timeout"]))
    assert data.feasible == data.infeasible == data.front == [] and data.pick is None
    assert data.failures == {"crash": 2, "oom": 1, "timeout": 1}  # most frequent first
    assert data.message == (
        "no measured trial to plot: 4 of 4 trials failed (2 crash, 1 oom, 1 timeout)"
    )
    assert "\n" not in data.message
    assert_draws(data, tmp_path)  # a picture of the message, not a traceback


def test_empty_study(tmp_path):
    data = data_of(study_of(tmp_path, []))
    assert data.message == "no measured trial to plot yet (0 trials, none finished)"
    assert_draws(data, tmp_path)


@pytest.mark.parametrize(
    ("throughputs", "log_y"),
    [([100.0, 999.0], False), ([100.0, 1000.0], True), ([50.0, 60_000.0, 700.0], True)],
)
def test_log_scale_only_when_throughput_spans_a_decade(tmp_path, throughputs, log_y):
    data = data_of(study_of(tmp_path, [(tp, 0.0) for tp in throughputs]))
    assert data.log_y is log_y
    assert_draws(data, tmp_path)


def test_far_off_drops_go_to_the_edge(tmp_path):
    # A NaN trial is scored as a total loss (~99 points): it must not squash the others.
    data = data_of(study_of(tmp_path, [(1000.0, 0.0), (1500.0, 0.3), (9000.0, 98.7)]))
    assert data.off_scale == [2]
    assert data.x_max == 2.0  # 4x the 0.5-point constraint
    assert [p.trial for p in data.front] == [0, 1, 2]  # still on the front, drawn at the edge
    assert data.pick.trial == 1
    assert_draws(data, tmp_path)


def test_loose_constraint_keeps_feasible_points_on_scale(tmp_path):
    study = study_of(tmp_path, [(1000.0, 0.0), (1500.0, 3.0), (9000.0, 98.7)])
    data = pareto_plot_data(
        trial_rows(study), model="m", backend="cpu", device="d", max_metric_drop=3.5
    )
    assert data.off_scale == [2] and data.x_max == 14.0
    data = pareto_plot_data(
        trial_rows(study), model="m", backend="cpu", device="d", max_metric_drop=100.0
    )
    assert data.off_scale == [] and data.x_max is None


def test_agreement_constraint_is_named(tmp_path):
    """With --min-agreement a trial can fail at zero drop: the band says what else counts."""
    study = study_of(tmp_path, [(1000.0, 0.0)])
    data = pareto_plot_data(
        trial_rows(study),
        model="m",
        backend="cpu",
        device="d",
        max_metric_drop=0.5,
        min_agreement=99.9,
    )
    assert data.min_agreement == 99.9 and data_of(study).min_agreement is None
    svg = io.BytesIO()
    draw(data, svg, "svg")
    assert b"agreement &gt;= 99.9%" in svg.getvalue()


def test_plot_table_marks_the_front_and_the_pick(tmp_path):
    """`autotune plot --format table`: every measured point, fastest first, the rest counted."""
    # Trial 1 (300/s, 0.2 pt) is the pick and dominates trial 2; trial 3 is infeasible.
    study = study_of(tmp_path, [(100.0, 0.1), (300.0, 0.2), (200.0, 0.4), (500.0, 2.0)], ["oom"])
    data = data_of(study)
    lines = plot_table(data).splitlines()
    assert lines[0] == data.title and lines[1].split() == [
        "#", "samples/s", "drop(pt)", "feasible", "front", "pick"
    ]  # fmt: skip
    body = {int(line.split()[0]): line.split()[1:] for line in lines[3:7]}
    assert list(body) == [3, 1, 2, 0]
    assert body[1] == ["300", "0.200", "yes", "yes", "yes"]
    assert body[2] == ["200", "0.400", "yes"]  # neither on the front nor the pick
    assert body[3][:3] == ["500", "2.000", "no"]
    assert lines[7:] == ["1 not measured (1 oom)"]


def test_plot_table_of_a_study_with_nothing_measured(tmp_path):
    data = data_of(study_of(tmp_path, [], ["oom", "crash"]))
    lines = plot_table(data).splitlines()
    assert lines[-1] == data.message and "2 of 2 trials failed" in data.message


def test_when_accuracy_does_not_separate_the_configs_batch_and_latency_views_do(tmp_path):
    """Every feasible trial at drop 0.000 (the CPU's usual case): no Pareto column of
    dots, but throughput by batch per family and latency against throughput, the budget
    drawn and the pick labelled."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'l.db'}", directions=["maximize", "minimize"]
    )
    for batch, level in [(16, 0), (64, 0), (256, 0), (64, 2), (256, 2)]:
        tp = 1000.0 * (1 + level) * batch**0.3
        record = TrialRecord(
            status="ok",
            config={
                "model": "mnist",
                "backend": "cpu",
                "batch_size": batch,
                "optimization_level": level,
                "activation_dtype": "fp32",
            },
            metrics={
                "throughput_samples_per_s": tp,
                "metric_drop": 0.0,
                "latency_ms_p95": 1e3 * batch / tp,
            },
        )
        study.add_trial(finished_trial(record, values=[tp, 0.0], constraints={"metric_drop": -0.5}))
    data = data_of(study)._replace(max_latency_ms=20.0)
    assert not data.separates
    assert {p.family for p in data.serving} == {"O0 fp32", "O2 fp32"}
    assert all(p.latency_ms is not None for p in data.serving)
    svg = io.BytesIO()
    draw(data, svg, "svg")
    text = svg.getvalue()
    assert b"throughput by batch size" in text and b"latency against throughput" in text
    assert b"budget: p95 &lt;= 20 ms" in text
    assert f"exported: trial {data.pick.trial}".encode() in text
    assert b"Pareto front" not in text  # the view that says nothing here is left out
    assert_draws(data, tmp_path)
