"""End to end: an emulated study (`--emulate tt`) on the seed CNN finds the cheapest math
fidelity that meets an accuracy constraint, says so, and its export carries the answer.

The constraint is PCC against fp32 (`--metric pcc`, the seed CNN's own study): top-1 does
not tell LoFi from HiFi4 on this model, PCC does. Measured (1000 eval images, Xeon with
AMX/avx512_bf16, torch 2.13 CPU): PCC drop 1.5e-5 at hifi4/hifi3, 2.1e-5 at hifi2, 6.1e-5
at lofi, so a limit of 4e-5 fails lofi and passes hifi2. The assertions read what the
emulation measured, not those figures.
"""

from __future__ import annotations

import json

import optuna
import pytest

from autotune.backends import get_backend
from autotune.records import TrialRecord
from search_spaces import default_space, load_space_file
from studies import get_study

MODEL = "mnist"
LIMIT = 4e-5
SPACE = """\
batch_size = {min = 256, max = 256}
optimization_level = [0]
channels_last = [false]
streams = [1]
fp32_dest_acc_en = ["unset"]
math_fidelity = ["hifi4", "hifi3", "hifi2", "lofi"]
"dtype:fc1.weight" = ["bf16"]
"dtype:fc2.weight" = ["bf16"]
"""


@pytest.mark.slow
def test_an_emulated_study_names_the_cheapest_fidelity_and_the_export_carries_it(cli, tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    r = cli(
        "study",
        "--model",
        MODEL,
        "--metric",
        "pcc",
        "--emulate",
        "tt",
        "--trials",
        "4",
        "--space",
        str(space),
        "--no-starting-points",
        "--confirm",
        "0",
        "--eval-limit",
        "1000",
        "--measure-seconds",
        "0.2",
        # --stop-slower at its default: the emulation is several times slower at hifi3 than
        # at hifi4 on this CPU, and is compared only with trials at its own fidelity.
        "--no-progress",
        "--seed",
        "0",
        "--max-metric-drop",
        str(LIMIT),
    )
    assert r.returncode == 0, r.stderr
    name = f"{MODEL}-cpu-emulate-tt"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'autotune.db'}")
    by_fidelity = {}
    for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        record = TrialRecord.of(t)
        by_fidelity[record.config["knobs"]["math_fidelity"]] = record.metrics["metric_drop"]
    # Every fidelity ran once (the descent from hifi4), and the emulation told them apart.
    assert sorted(by_fidelity) == ["hifi2", "hifi3", "hifi4", "lofi"]
    assert by_fidelity["lofi"] > LIMIT >= by_fidelity["hifi2"]
    assert by_fidelity["lofi"] > 2 * by_fidelity["hifi4"]
    lofi_trial = next(
        t.number
        for t in study.get_trials()
        if TrialRecord.of(t).config["knobs"]["math_fidelity"] == "lofi"
    )
    line = (
        f"math fidelity: lofi fails the constraint (trial #{lofi_trial}: PCC vs fp32 drop "
        f"{by_fidelity['lofi']:.3g} vs limit {LIMIT:g}); cheapest that meets it: hifi2 "
        "(card matmul rate 2x hifi4"
    )
    assert line in r.stderr  # said when the study ends
    r = cli("show", "--study", name)
    assert r.returncode == 0 and line in r.stdout
    r = cli("show", "--study", name, "--format", "json")
    assert json.loads(r.stdout)["math_fidelity"]["cheapest_feasible"] == "hifi2"
    r = cli("report", "--study", name, "-o", "report.html")
    assert r.returncode == 0, r.stderr
    assert "cheapest that meets it: hifi2" in (tmp_path / "report.html").read_text()

    r = cli("export", "--study", name, "-o", "best.json")
    assert r.returncode == 0, r.stderr
    verdict = json.loads((tmp_path / "best.json").read_text())["math_fidelity"]
    assert verdict["cheapest_feasible"] == "hifi2" and verdict["matmul_rate_vs_hifi4"] == 2.0
    assert list(verdict["ruled_out"]) == ["lofi"]
    assert verdict["ruled_out"]["lofi"]["trial"] == lofi_trial
    # What a card study's space file offers so that no card trial goes to lofi.
    assert verdict["card_space"] == {"math_fidelity": ["hifi4", "hifi3", "hifi2"]}
    assert 'math_fidelity = ["hifi4", "hifi3", "hifi2"]' in r.stderr
    # The pick is the fastest on this CPU; if it is not hifi2, export says what the card's is.
    ran = json.loads((tmp_path / "best.json").read_text())["knobs"]["math_fidelity"]
    assert (ran != "hifi2") == ("the cheapest fidelity that met the constraint" in r.stderr)
    # `--space best.json` gives a card study exactly that space.
    tt = default_space(get_study("mnist"), get_backend("tt"))
    narrowed = tt.narrowed(load_space_file(tmp_path / "best.json"))
    assert [d.choices for d in narrowed.dimensions if d.name == "math_fidelity"] == [
        ("hifi4", "hifi3", "hifi2")
    ]
    r = cli("export", "--study", name, "--format", "tt-mixed-precision")
    assert r.returncode == 0 and 'math_fidelity = ["hifi4", "hifi3", "hifi2"]' in r.stderr
