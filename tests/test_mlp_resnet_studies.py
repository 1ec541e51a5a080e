"""The mnist_mlp and mnist_resnet studies: discovery, weight lists, real accuracy, dtypes,
compile, and a real two-trial study each through the CLI."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import torch

from autotune.backends import get_backend
from autotune.backends._torch_dtypes import apply_layer_dtypes
from search_spaces import default_space
from studies import get_study, study_names
from tests.conftest import FAST_ARGS

# Top-1 of the shipped weights on the first 2000 real test images (full 10k set in the
# comment), from the training commands in each study's docstring; the floor allows 0.5 points.
ACCURACY_FIRST_2000 = {
    "mnist_mlp": 0.9765,  # 98.36% on 10k: train_mnist_mlp --epochs 3
    "mnist_resnet": 0.9915,  # 99.51% on 10k: train_mnist_resnet --epochs 3 --threads 1
}
N_ACCURACY = 2000
N_AGREEMENT = 1000
MODELS = sorted(ACCURACY_FIRST_2000)


@pytest.fixture(scope="module", params=MODELS)
def study(request):
    return get_study(request.param)


@pytest.fixture(scope="module")
def data(study):
    images, labels = study.eval_data()
    return images[:N_ACCURACY], labels[:N_ACCURACY]


@pytest.fixture(scope="module")
def model(study):
    return study.build_model()


@pytest.fixture(scope="module")
def fp32_pred(model, data):
    with torch.no_grad():
        return model(data[0][:N_AGREEMENT]).argmax(1)


def _lowerable_weights(model: torch.nn.Module) -> list[tuple[str, str]]:
    kinds = {torch.nn.Linear: "linear", torch.nn.Conv2d: "conv"}
    modules = model.named_modules()
    return [(f"{name}.weight", kinds[type(m)]) for name, m in modules if type(m) in kinds]


def test_discovered_with_metadata(study):
    assert study.name in study_names()
    assert study.sample_shape == (1, 28, 28)
    assert study.max_batch_size == 4096
    assert study.description


@pytest.mark.parametrize("name", MODELS)
def test_study_module_does_not_import_torch(name):
    code = f"import sys, studies.{name}; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_weights_are_every_conv_and_linear_in_model_order(study, model):
    assert [(w.name, w.kind) for w in study.weights] == _lowerable_weights(model)
    assert not model.training


def test_mlp_shape():
    from studies.models.mnist_mlp import HIDDEN

    model = get_study("mnist_mlp").build_model()
    assert [m.weight.shape[0] for m in (model.fc1, model.fc2, model.fc3)] == [HIDDEN, HIDDEN, 10]
    assert HIDDEN >= 1024  # wide: GEMM-bound


def test_resnet_depth_matches_the_study():
    from studies import mnist_resnet
    from studies.models import mnist_resnet as model_module

    model = get_study("mnist_resnet").build_model()
    assert mnist_resnet.BLOCKS_PER_STAGE == model_module.BLOCKS_PER_STAGE
    assert mnist_resnet.N_STAGES == len(model_module.WIDTHS) == len(model.stages)
    blocks = sum(len(stage) for stage in model.stages)
    assert blocks >= 8 and max(model_module.WIDTHS) <= 32  # deep and narrow
    # Too many weights for one dimension each: grouped by role, as tt-xla globs.
    space = default_space(get_study("mnist_resnet"), get_backend("cpu"))
    assert sorted(space.weight_groups()) == [
        "head.weight",
        "stages.*.*.conv1.weight",
        "stages.*.*.conv2.weight",
        "stages.*.*.shortcut.weight",
        "stem.weight",
    ]


def test_shipped_state_dict_loads_weights_only(study, model):
    from importlib import import_module

    path = import_module(f"studies.{study.name}").WEIGHTS_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}
    assert path.stat().st_size < 9_000_000


def test_accuracy_on_real_test_set(study, model, data):
    images, labels = data
    assert images.shape == (N_ACCURACY, *study.sample_shape)
    with torch.no_grad():
        out = model(images)
    assert out.shape == (N_ACCURACY, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(N_ACCURACY), atol=1e-4)  # log_softmax
    accuracy = (out.argmax(1) == labels).float().mean().item()
    assert accuracy >= max(0.95, ACCURACY_FIRST_2000[study.name] - 0.005), accuracy


def test_example_input_runs(study, model):
    with torch.no_grad():
        assert model(study.example_input(3)).shape == (3, 10)


@pytest.mark.parametrize(
    ("weight_dtype", "activation"),
    [
        ("bf16", torch.bfloat16),  # uniform bf16
        ("bf16", torch.float32),  # bf16 layers, fp32 between them
        ("fp32", torch.bfloat16),  # bf16 model, fp32 first and last layers
    ],
)
def test_layer_dtypes_keep_predictions(study, data, fp32_pred, weight_dtype, activation):
    ends = (study.weights[0].name, study.weights[-1].name)
    weight_map = {"default": "bf16"} if weight_dtype == "bf16" else dict.fromkeys(ends, "fp32")
    model = apply_layer_dtypes(study.build_model(), weight_map, activation)
    modules = dict(model.named_modules())
    dtypes = {modules[w.name.removesuffix(".weight")].weight.dtype for w in study.weights}
    expected = {torch.bfloat16} if weight_dtype == "bf16" else {torch.bfloat16, torch.float32}
    assert dtypes == expected
    images = data[0][:N_AGREEMENT].to(activation)
    with torch.no_grad():
        out = model(images)
    assert out.dtype == activation
    assert (out.argmax(1) == fp32_pred).float().mean().item() >= 0.99


def test_runs_under_torch_compile_channels_last(study, model, data):
    images = data[0][:8]
    with torch.no_grad():
        expected = model(images)
        compiled = torch.compile(model, backend="inductor", dynamic=False)
        actual = compiled(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_two_trial_study(cli, tmp_path, fast_space, name):
    r = cli("study", "--model", name, "--trials", "2", "--space", str(fast_space), *FAST_ARGS)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(
        study_name=f"{name}-cpu", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    meta = study.user_attrs["autotune"]
    assert meta["reference_accuracy"] > 0.95  # fp32 top-1 on the first 1000 test images
    trials = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(trials) == 2
    assert all(t.user_attrs["status"] == "ok" for t in trials)
    measured = [t for t in trials if t.user_attrs.get("duplicate_of") is None]
    assert all(t.user_attrs["metrics"]["throughput_samples_per_s"] > 0 for t in measured)
    assert set(meta["confirmed"]) <= {str(t.number) for t in measured}
    r = cli("export", "--study", f"{name}-cpu", "-o", "best.json")
    assert r.returncode == 0, r.stderr
