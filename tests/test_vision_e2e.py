"""The vision zoos end to end through the vision trial interpreter (`--trial-python`, built by
tests/vision_venv/setup_venv.sh: torch 2.14.1 + torchvision 0.29.1 + timm from PyPI, cached
outside the clone). The tuner side is this venv (torch's CPU build, no torchvision): it must
never import torchvision or timm. Skips with the setup script's reason when the venv cannot
be built."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SETUP = ROOT / "tests" / "vision_venv" / "setup_venv.sh"
ARGS = ("--measure-seconds", "0.2", "--no-progress", "--seed", "0", "--stop-slower", "0")
SPACE = """\
batch_size = {min = 16, max = 64}
optimization_level = [0, 1]
"""


@pytest.fixture(scope="module")
def vision_python() -> str:
    """The vision interpreter, built or reused by the setup script (in the real cache dir,
    not the tests' temporary one)."""
    r = subprocess.run(
        ["bash", str(SETUP)], capture_output=True, text=True, env=dict(os.environ), timeout=1800
    )
    if r.returncode != 0:
        venv = os.environ.get("AUTOTUNE_VISION_VENV") or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            / "autotune-ci"
            / "vision-py311"
        )
        reason = Path(f"{venv}.unavailable")
        why = reason.read_text().strip() if reason.exists() else r.stderr.strip()[-300:]
        pytest.skip(f"no vision interpreter: {why}")
    return r.stdout.strip().splitlines()[-1]


def _space(tmp_path: Path) -> str:
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return str(path)


def test_shipped_torchvision_example_studies_exports_and_verifies(cli, tmp_path, vision_python):
    model = f"{ROOT / 'studies/examples/vision_mnist.py'}:STUDY"
    study = "vision_mnist.py:STUDY-cpu"
    trial = ("--trial-python", vision_python)
    r = cli("study", "--model", model, "--trials", "4", "--space", _space(tmp_path), *trial, *ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "metric top-1 accuracy" in r.stderr

    shown = json.loads(cli("show", "--study", study, "--format", "json").stdout)
    ok = [t for t in shown["trials"] if t["status"] == "ok"]
    assert ok, shown["trials"]
    # real accuracy on the 2000 held-out images: the trained weights, not chance
    assert all(t["metrics"]["accuracy"] > 0.9 for t in ok), ok

    assert cli("export", "--study", study, "-o", "best.json").returncode == 0
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["model"] == model
    v = cli(
        "verify", "best.json", "--rounds", "1", "--max-slowdown", "0.9", "--model", model, *trial
    )
    assert v.returncode == 0, v.stdout + v.stderr[-3000:]


def test_random_weight_timm_model_studies_by_fidelity(cli, tmp_path, vision_python):
    r = cli(
        "study", "--model", "timm:mobilenetv3_small_050", "--trials", "3",
        "--space", _space(tmp_path), "--trial-python", vision_python, *ARGS,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "has random weights (no --weights FILE): the metric is fidelity" in r.stderr
    shown = json.loads(
        cli("show", "--study", "timm:mobilenetv3_small_050-cpu", "--format", "json").stdout
    )
    assert [t for t in shown["trials"] if t["status"] == "ok"], shown["trials"]


def test_tuner_side_never_imports_the_zoos():
    """Reading a zoo spec, or the shipped example file, imports neither torchvision nor timm."""
    code = (
        "import sys; from studies import get_study; "
        "[get_study(s).notes() for s in ('timm:resnet18', 'torchvision:resnet18', "
        f"'{ROOT / 'studies/examples/vision_mnist.py'}:STUDY')]; "
        "print([m for m in sys.modules if m.split('.')[0] in ('torchvision', 'timm')])"
    )
    out = subprocess.run(
        [os.sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert out.strip() == "[]"
