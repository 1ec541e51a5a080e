"""Users' own models: batches of any structure, outputs of any shape, their own metric,
weights discovered, loaded from a file or a factory (unit level; the studies that run them
end to end are in tests/test_own_models_e2e.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest
import torch
from torch import nn

from autotune import pytree
from autotune.child.metrics import MetricError, metric_value, score
from studies import (
    PCC,
    TOP1,
    FactoryStudy,
    Metric,
    UnknownStudyError,
    Weight,
    discover_weights,
    get_study,
)
from tests.conftest import ROOT


def _batch(n: int = 5) -> dict:
    return {
        "ids": torch.arange(n * 3).reshape(n, 3),
        "mask": torch.ones(n, 3, dtype=torch.bool),
        "image": torch.randn(n, 2, 4, 4),
    }


# --- batches -------------------------------------------------------------------------------


def test_rows_split_pad_and_take_keep_structure_and_dtypes():
    x = _batch(5)
    assert pytree.rows(x) == 5
    parts = pytree.split(x, 2)
    assert [pytree.rows(p) for p in parts] == [2, 2, 1]
    padded = pytree.pad_rows(parts[-1], 2)
    assert padded["ids"].dtype == torch.int64 and padded["mask"].dtype == torch.bool
    assert torch.equal(padded["ids"][1], torch.zeros(3, dtype=torch.int64))
    assert torch.equal(pytree.take(x, 1, 3)["image"], x["image"][1:3])
    cycled = pytree.cycle_rows(x, 7)
    assert pytree.rows(cycled) == 7 and torch.equal(cycled["ids"][5], x["ids"][0])


def test_rows_refuses_a_batch_whose_tensors_disagree_on_dim_0():
    with pytest.raises(pytree.BatchError, match=r"same dim 0.*ids: 5, other: 4"):
        pytree.rows({"ids": torch.zeros(5, 2), "other": torch.zeros(4, 2)})
    with pytest.raises(pytree.BatchError, match="at least one tensor"):
        pytree.rows({"n": 3})


def test_cast_floating_never_casts_integer_or_bool_tensors():
    cast = pytree.cast_floating((_batch(), torch.ones(2)), torch.bfloat16)
    assert cast[0]["ids"].dtype == torch.int64
    assert cast[0]["mask"].dtype == torch.bool
    assert cast[0]["image"].dtype == torch.bfloat16 and cast[1].dtype == torch.bfloat16


def test_call_unpacks_dicts_and_tuples():
    seen = []

    def model(*args, **kwargs):
        seen.append((len(args), sorted(kwargs)))

    pytree.call(model, {"a": 1, "b": 2})
    pytree.call(model, (1, 2, 3))
    pytree.call(model, torch.zeros(1))
    assert seen == [(0, ["a", "b"]), (3, []), (1, [])]


class _ModelOutput(OrderedDict):
    """What Hugging Face models return: a Mapping with attribute access."""


def test_select_output_picks_logits_then_the_first_floating_tensor():
    logits, hidden = torch.randn(2, 3), torch.randn(2, 8)
    assert pytree.select_output(_ModelOutput(hidden=hidden, logits=logits)) is logits
    assert pytree.select_output((torch.arange(2), hidden, logits)) is hidden
    assert pytree.select_output({"a": hidden, "b": logits}, "b") is logits
    assert pytree.select_output((hidden, logits), 1) is logits
    with pytest.raises(pytree.BatchError, match=r"no 'pred'; it has a, b"):
        pytree.select_output({"a": hidden, "b": logits}, "pred")
    with pytest.raises(pytree.BatchError, match="no floating-point tensor"):
        pytree.select_output({"ids": torch.arange(2)})


# --- metrics -------------------------------------------------------------------------------


def test_metric_values_must_be_finite_numbers():
    out = torch.randn(4, 3)

    def returning(value):
        return Metric("m", lambda o, t: value)

    assert metric_value(returning(torch.tensor(0.25)), out, out) == 0.25
    assert metric_value(returning(3), out, out) == 3.0
    for bad, why in [
        (float("nan"), "returned nan"),
        ("0.9", "returned a str"),
        (True, "returned a bool"),
        (torch.ones(2), "returned a Tensor"),
        (None, "returned a NoneType"),
    ]:
        with pytest.raises(MetricError, match=why):
            metric_value(returning(bad), out, out)
    with pytest.raises(MetricError, match="needs labels"):
        metric_value(TOP1, out, None)


def test_drop_is_positive_when_worse_in_either_direction():
    rmse = Metric("RMSE", lambda o, t: 0.0, unit="RMSE", higher_is_better=False)
    assert rmse.drop(0.10, 0.12) == pytest.approx(0.02)
    assert TOP1.drop(98.0, 97.5) == pytest.approx(0.5)


def test_score_reports_the_metric_its_drop_and_fidelity():
    ref = torch.randn(50, 4)
    labels = ref.argmax(1)
    noisy = ref + 0.01 * torch.randn(50, 4)
    figures = score(noisy, ref, labels, TOP1, 100.0)
    assert figures["metric"] == 100.0 * figures["accuracy"]
    assert figures["metric_drop"] == pytest.approx(100.0 - figures["metric"])
    assert 0.99 < figures["pcc"] <= 1.0 and "agreement" in figures
    # A regression output has no classes: no agreement, the metric against fp32.
    figures = score(noisy[:, 0], ref[:, 0], None, PCC, 1.0)
    assert "agreement" not in figures and "accuracy" not in figures
    assert figures["metric_drop"] == pytest.approx(1.0 - figures["pcc"])


# --- weights and loading --------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 4, 1)
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10)
        self.tied = self.head  # the same Linear under a second name

    def forward(self, ids):
        h = self.conv(self.embed(ids).transpose(1, 2)).transpose(1, 2)
        for b in self.blocks:
            h = b(h)
        return self.tied(self.norm(h)).mean(1)


def test_weights_discovered_in_model_order_once_each_without_embeddings():
    assert discover_weights(_Net()) == (
        Weight("conv.weight", "conv"),
        Weight("blocks.0.weight", "linear"),
        Weight("blocks.1.weight", "linear"),
        Weight("head.weight", "linear"),
    )


def _write(tmp_path, text: str):
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_file_path_loads_a_factory_that_every_process_rebuilds_alike(tmp_path):
    path = _write(
        tmp_path,
        """
        import torch

        def build():
            '''Two random layers.'''
            model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 2))
            return model, torch.randn(6, 3)
        """,
    )
    study = get_study(f"{path}:build")
    assert isinstance(study, FactoryStudy) and study.description == "Two random layers."
    first, again = study.build_model(), study.build_model()
    assert first is not again
    # A second process (as each trial process does) builds the same random weights.
    code = (
        "import sys, torch; from studies import get_study\n"
        "m = get_study(sys.argv[1]).build_model()\n"
        "print(sum(float(t.double().sum()) for t in m.state_dict().values()))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, f"{path}:build"], capture_output=True, text=True, env=env
    )
    here = sum(float(t.double().sum()) for t in first.state_dict().values())
    assert float(out.stdout.strip()) == here, out.stderr
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True)
    )
    inputs, labels = study.eval_data()
    assert pytree.rows(inputs) == 6 and labels is None
    assert study.scoring(False) is PCC
    assert pytree.rows(study.example_input(16)) == 16  # eval rows, repeated


@pytest.mark.parametrize(
    ("source", "attr", "message"),
    [
        ("x = 1\n", "missing", r"has no 'missing'"),
        ("x = 1\n", "x", r"is a int: give a studies.Study"),
        ("raise RuntimeError('boom at import')\n", "x", r"RuntimeError: boom at import"),
        ("import no_such_package_here\n", "x", r"No module named 'no_such_package_here'"),
    ],
)
def test_bad_user_files_are_one_line(tmp_path, source, attr, message):
    path = _write(tmp_path, source)
    with pytest.raises(UnknownStudyError, match=message) as info:
        get_study(f"{path}:{attr}")
    assert "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(UnknownStudyError, match=r"no file .*nope.py"):
        get_study(f"{tmp_path}/nope.py:STUDY")


def test_a_factory_returning_the_wrong_shape_says_what_it_must_return(tmp_path):
    path = _write(tmp_path, "import torch\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    with pytest.raises(TypeError, match=r"must return \(model, inputs\)"):
        get_study(f"{path}:build").build_model()


def test_the_examples_define_their_own_contract():
    regressor = get_study("studies/examples/regressor.py:STUDY")
    assert regressor.output == "prediction" and regressor.metric.name == "RMSE"
    assert not regressor.metric.higher_is_better
    inputs, labels = regressor.eval_data()
    assert inputs["category"].dtype == torch.int64 and inputs["features"].is_floating_point()
    with torch.no_grad():
        out = pytree.call(regressor.build_model(), pytree.take(inputs, 0, 100))
    rmse = regressor.metric.fn(out["prediction"], labels[:100])
    assert math.isfinite(rmse) and rmse < 0.2  # trained: the targets' spread is about 1.5
    tokens = get_study("studies/examples/token_classifier.py:STUDY")
    inputs, labels = tokens.eval_data()
    assert inputs["input_ids"].dtype == torch.int64 and tokens.weights is None
    with torch.no_grad():
        logits = pytree.call(tokens.build_model(), inputs)
    assert TOP1.fn(logits, labels) > 95.0
