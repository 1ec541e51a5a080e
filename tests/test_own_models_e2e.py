"""Users' own models end to end, in real trial processes: the shipped example files through
`--model path.py:ATTR` (study, show, plot, export, verify, report), a factory through
`autotune.tune`, and bad models and bad metrics, each stopped with one line."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch

import autotune
from autotune import pytree
from autotune.errors import UsageError
from studies import get_study
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "studies" / "examples"
# Both activation dtypes, eager and compiled: the int64 inputs must survive each.
SPACE = """\
batch_size = {min = 64, max = 256}
optimization_level = [0, 1]
"""
ARGS = ("--measure-seconds", "0.2", "--no-progress", "--seed", "0", "--stop-slower", "0")


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


@pytest.mark.parametrize(
    ("example", "header", "metric"),
    [
        ("token_classifier.py", "drop(pt)", "top-1 accuracy"),
        ("regressor.py", "drop(RMSE)", "RMSE"),
    ],
)
def test_example_file_runs_study_export_verify_and_report(cli, tmp_path, example, header, metric):
    model = f"{EXAMPLES / example}:STUDY"
    study = f"{example}:STUDY-cpu"
    r = cli("study", "--model", model, "--trials", "6", "--space", str(_space(tmp_path)), *ARGS)
    assert r.returncode == 0, r.stderr
    assert f"metric {metric}" in r.stderr and f"feasible = {metric} drop <=" in r.stderr
    assert header in r.stdout

    shown = json.loads(cli("show", "--study", study, "--format", "json").stdout)
    ran = [t for t in shown["trials"] if t["status"] == "ok"]
    assert {t["config"]["activation_dtype"] for t in ran} == {"fp32", "bf16"}, shown["trials"]
    assert all(t["metrics"]["metric_drop"] is not None for t in ran)
    assert shown["meta"]["metric"]["name"] == metric

    plot = cli("plot", "--study", study, "--format", "table")
    assert plot.returncode == 0 and header in plot.stdout

    assert cli("export", "--study", study, "-o", "best.json").returncode == 0
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["constraint"]["metric"]["name"] == metric
    assert exported["model"] == model

    v = cli("verify", "best.json", "--rounds", "1", "--max-slowdown", "0.9", "--model", model)
    assert v.returncode == 0, v.stdout + v.stderr
    assert metric in v.stdout

    assert cli("report", "--study", study, "-o", "report.html").returncode == 0
    assert f"{metric} drop" in (tmp_path / "report.html").read_text()


FACTORY = '''
import torch
from torch import nn


class Mixer(nn.Module):
    """A dict of float + int inputs in, a dict out."""

    def __init__(self):
        super().__init__()
        self.kind = nn.Embedding(5, 4)
        self.body = nn.Linear(12, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, image, kind):
        h = torch.relu(self.body(torch.cat([image.flatten(1), self.kind(kind)], 1)))
        return {"scores": self.head(h), "features": h}


def build():
    gen = torch.Generator().manual_seed(1)
    inputs = {"image": torch.randn(300, 2, 2, 2, generator=gen),
              "kind": torch.randint(0, 5, (300,), generator=gen)}
    return Mixer(), inputs
'''


def test_tune_runs_a_factory_in_trial_processes_and_returns_the_pick(tmp_path, monkeypatch):
    path = tmp_path / "mixer.py"
    path.write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    result = autotune.tune(
        model=f"{path}:build",
        trials=4,
        space={"batch_size": {"min": 32, "max": 64}, "optimization_level": [0]},
        measure_seconds=0.2,
        stop_slower=0,
        storage=f"sqlite:///{tmp_path / 'tune.db'}",
        cache_dir=tmp_path / "cache",
    )
    statuses = {t.user_attrs.get("status") for t in result.study.trials}
    assert statuses == {"ok"}, [t.user_attrs.get("message") for t in result.study.trials]
    dtypes = {t.user_attrs["config"]["activation_dtype"] for t in result.study.trials}
    assert dtypes == {"fp32", "bf16"}
    assert result.pick is not None and result.pick.metrics["metric_drop"] <= 0.01  # PCC
    bf16 = result.pick.config["activation_dtype"] == "bf16"
    assert result.export(tmp_path / "best.json").exists()
    study = get_study(f"{path}:build")
    model = autotune.apply_config(study.build_model(), tmp_path / "best.json")
    inputs, _ = study.eval_data()
    out = model(**pytree.cast_floating(inputs, torch.bfloat16 if bf16 else torch.float32))
    assert out["scores"].shape == (300, 3)


def test_tune_refuses_an_unknown_option_and_a_local_function():
    with pytest.raises(UsageError, match=r"unknown option\(s\) trails"):
        autotune.tune(model="mnist", trails=3)

    def local():
        raise AssertionError("never called")

    with pytest.raises(UsageError, match="top level"):
        autotune.tune(model=local, trials=1)


BAD_MODELS = {
    "wrong_inputs": (
        "import torch\ndef build():\n    return torch.nn.Linear(4, 2), torch.randn(10, 3)\n",
        r"cannot run on its own inputs .*RuntimeError: mat1 and mat2 shapes cannot be multiplied",
    ),
    "int_output": (
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x.argmax(1)\n"
        "def build():\n"
        "    return M(), torch.randn(10, 3)\n",
        r"the scored output is torch.int64, not floating point",
    ),
    "metric_type": (
        "import torch\n"
        "from studies import Metric, Study\n"
        "class S(Study):\n"
        "    metric = Metric('mine', lambda out, y: 'good', against='fp32')\n"
        "    def build_model(self):\n"
        "        return torch.nn.Linear(3, 2)\n"
        "    def eval_data(self):\n"
        "        return torch.randn(10, 3), None\n"
        "STUDY = S()\n",
        r"metric 'mine' returned a str, not a number",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_models_stop_the_study_in_one_line_before_any_trial(cli, tmp_path, case):
    source, message = BAD_MODELS[case]
    path = tmp_path / f"{case}.py"
    path.write_text(source)
    attr = "STUDY" if "STUDY" in source else "build"
    r = cli("study", "--model", f"{path}:{attr}", "--trials", "3", *ARGS)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{case}.py:{attr}" in lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "autotune.db").exists() or "Trial" not in r.stdout


def test_a_metric_that_returns_nan_fails_its_trials_with_the_reason(cli, tmp_path):
    """fp32 passes the describe and reference runs (equal outputs score 1); bf16 outputs
    differ, and the metric returns NaN there: failed trials, the reason on each."""
    path = tmp_path / "nan_metric.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from studies import Metric, Study

            def picky(out, fp32):
                return 1.0 if torch.equal(out, fp32) else float("nan")

            class S(Study):
                metric = Metric("picky", picky, against="fp32")
                def build_model(self):
                    torch.manual_seed(0)
                    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 2))
                def eval_data(self):
                    return torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), None

            STUDY = S()
            """
        )
    )
    space = tmp_path / "bf16.toml"
    space.write_text('activation_dtype = ["bf16"]\noptimization_level = [0]\n')
    r = cli("study", "--model", f"{path}:STUDY", "--trials", "2", "--space", str(space), *ARGS)
    assert r.returncode == 0, r.stderr
    shown = json.loads(cli("show", "--study", "nan_metric.py:STUDY-cpu", "--format", "json").stdout)
    failed = [t for t in shown["trials"] if t["status"] == "metric_error"]
    assert failed and all(t["state"] == "FAIL" for t in failed)
    assert all("metric 'picky' returned nan" in t["message"] for t in failed)
