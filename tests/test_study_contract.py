"""The `Study` contract, one suite run against every registered study.

As the backend contract (test_backend_contract.py) runs against every backend, this file
checks what `studies.Study` and `studies.mnist.TrainedMNISTStudy` promise, the same way, for
each study the registry discovers: metadata the tuner reads without torch, a weight list
that matches the model, shipped weights that match the architecture and load with
``weights_only=True``, the real 10k MNIST test set as eval data, and the trained accuracy.
What is particular to one study (its depth, width, dtype behaviour) stays in its own file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studies import Study, get_study, study_names
from studies.mnist import TrainedMNISTStudy

ROOT = Path(__file__).resolve().parent.parent

#: Top-1 of each study's shipped weights on the first 2000 real test images, and (comment)
#: on the full 10k set, from the training command in its docstring (README "Studies").
#: A new study fails here until its figure is written down.
ACCURACY_FIRST_2000 = {
    "mnist": 0.9820,  # 98.82% on 10k: train_mnist_cnn
    "mnist_mlp": 0.9765,  # 98.36% on 10k: train_mnist_mlp --epochs 3
    "mnist_resnet": 0.9915,  # 99.51% on 10k: train_mnist_resnet --epochs 3 --threads 1
    "mnist_transformer": 0.9875,  # 98.99% on 10k: train_mnist_transformer --epochs 8
}
ACCURACY_SLACK = 0.005  # half a point: other CPUs' kernels may flip a few borderline images
N_ACCURACY = 2000
#: Images per digit in the real MNIST test set (t10k-labels-idx1-ubyte): 10,000 in all.
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MAX_WEIGHTS_FILE_BYTES = 9_000_000  # shipped inside the package


@pytest.fixture(scope="module", params=study_names())
def study(request: pytest.FixtureRequest) -> Study:
    return get_study(request.param)


@pytest.fixture(scope="module")
def trained(study: Study) -> TrainedMNISTStudy:
    if not isinstance(study, TrainedMNISTStudy):
        pytest.skip(f"{study.name}: not a TrainedMNISTStudy (no shipped weights, own data)")
    return study


@pytest.fixture(scope="module")
def model(study: Study) -> torch.nn.Module:
    return study.build_model()


@pytest.fixture(scope="module")
def data(study: Study) -> tuple[torch.Tensor, torch.Tensor | None]:
    return study.eval_data()


# --- metadata: read by the tuner without torch ----------------------------------------------

_METADATA = """
import json, sys
from studies import study_names, get_study
out = {n: [get_study(n).description, list(get_study(n).sample_shape),
           [[w.name, w.kind] for w in get_study(n).weights]] for n in study_names()}
print(json.dumps({"studies": out, "torch": "torch" in sys.modules}))
"""


def test_metadata_is_read_without_importing_torch():
    proc = subprocess.run(
        [sys.executable, "-c", _METADATA], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["torch"] is False
    assert sorted(out["studies"]) == study_names() == sorted(ACCURACY_FIRST_2000)


def test_metadata_is_well_formed(study):
    assert get_study(study.name) is study and study.description.strip()
    assert all(isinstance(n, int) and n > 0 for n in study.sample_shape)
    top = study.max_batch_size
    assert top >= 1 and top & (top - 1) == 0  # a power of two: the batch-size dimension's top
    names = [w.name for w in study.weights]
    assert names and len(set(names)) == len(names)
    assert {w.kind for w in study.weights} <= {"linear", "conv"}


def _lowerable(model: torch.nn.Module) -> list[tuple[str, str]]:
    kinds = ((torch.nn.Linear, "linear"), (torch.nn.Conv2d, "conv"))
    return [
        (f"{name}.weight", kind)
        for name, module in model.named_modules()
        for cls, kind in kinds
        if isinstance(module, cls)
    ]


def test_weights_are_every_conv_and_linear_in_model_order(study, model):
    assert [(w.name, w.kind) for w in study.weights] == _lowerable(model)
    params = dict(model.named_parameters())
    assert all(w.name in params for w in study.weights)


# --- the model: eval mode, fp32, the shipped weights -----------------------------------------


def test_built_model_is_fp32_in_eval_mode(model):
    assert not model.training and not any(m.training for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_shipped_weights_match_the_architecture(trained):
    path = trained.weights_file
    assert path.is_file() and path.stat().st_size < MAX_WEIGHTS_FILE_BYTES
    state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    fresh = trained.new_model()
    expected = {n: t.shape for n, t in [*fresh.named_parameters(), *fresh.named_buffers()]}
    expected = {n: s for n, s in expected.items() if n in fresh.state_dict()}  # persistent
    assert {n: t.shape for n, t in state.items()} == expected
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_built_model_holds_the_shipped_weights(trained, model):
    state = torch.load(trained.weights_file, map_location="cpu", weights_only=True)
    built = model.state_dict()
    assert set(built) == set(state)
    assert all(torch.equal(built[n], state[n]) for n in state)
    # ...and not what a fresh (randomly initialised) architecture holds.
    fresh = dict(trained.new_model().named_parameters())
    assert not all(torch.equal(built[n], p) for n, p in fresh.items())


# --- data ------------------------------------------------------------------------------------


def test_eval_data_is_the_real_mnist_test_set(trained, data):
    images, labels = data
    assert images.shape == (10_000, *trained.sample_shape) and images.dtype == torch.float32
    assert images.device.type == "cpu" and torch.isfinite(images).all()
    # Normalised as in training (studies.mnist.normalize): mean about 0, std about 1.
    assert abs(images.mean().item()) < 0.05 and 0.9 < images.std().item() < 1.1
    assert labels is not None and labels.shape == (10_000,) and labels.dtype == torch.int64
    assert labels.min().item() >= 0 and labels.max().item() <= 9
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS


@pytest.mark.parametrize("n", [1, 3])
def test_example_input_maps_to_log_probabilities(study, model, n):
    x = study.example_input(n)
    assert x.shape == (n, *study.sample_shape) and x.dtype == torch.float32
    assert torch.equal(x, study.example_input(n))  # seeded: every trial times the same batch
    with torch.no_grad():
        out = model(x)
    assert out.shape == (n, 10) and torch.isfinite(out).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(n))  # log_softmax


def test_fp32_accuracy_is_as_documented(study, model, data):
    images, labels = data
    with torch.no_grad():
        out = model(images[:N_ACCURACY])
    assert out.shape == (N_ACCURACY, 10)
    accuracy = (out.argmax(1) == labels[:N_ACCURACY]).double().mean().item()
    assert accuracy >= ACCURACY_FIRST_2000[study.name] - ACCURACY_SLACK, accuracy


def test_metric_option_scores_any_study_by_a_builtin_metric():
    """`--metric NAME` travels in the model spec (`?metric=NAME`), so every process that
    resolves the spec scores by it; the study itself is left as its source made it."""
    from autotune import defaults
    from autotune.errors import UsageError
    from autotune.study_options import StudyOptions
    from studies.metrics import BUILTIN, PCC

    assert tuple(BUILTIN) == defaults.METRICS  # the CLI's choices, read without torch
    opts = StudyOptions("mnist", metric="pcc")
    assert opts.model == "mnist?metric=pcc" and opts.name == "mnist-cpu"
    assert get_study(opts.model).scoring(True) is PCC
    assert get_study("mnist").scoring(True).name == "top-1 accuracy"
    token = "studies/examples/token_classifier.py:STUDY"
    assert get_study(f"{token}?metric=agreement").scoring(True) is BUILTIN["agreement"]
    with pytest.raises(UsageError, match="--metric must be one of top1, agreement, pcc, cosine"):
        get_study("mnist?metric=bogus")


def test_metric_flag_refuses_an_unknown_name_in_one_line(cli):
    r = cli("study", "--model", "mnist", "--metric", "f1", "--trials", "1")
    assert r.returncode == 2
    assert "invalid choice: 'f1'" in r.stderr and "Traceback" not in r.stderr
