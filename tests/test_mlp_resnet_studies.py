"""The mnist_mlp and mnist_resnet studies: shape and depth, dtypes, compile, and a real
two-trial study each through the CLI. What every study promises (metadata, weight list,
shipped weights, eval data, accuracy) is checked for all of them in test_study_contract.py."""

from __future__ import annotations

import optuna
import pytest
import torch

from autotune.backends import get_backend
from autotune.backends._torch_dtypes import apply_layer_dtypes
from autotune.records import TrialRecord, read_study, trial_status
from search_spaces import default_space
from studies import get_study
from tests.conftest import FAST_ARGS

N_AGREEMENT = 1000
MODELS = ["mnist_mlp", "mnist_resnet"]


@pytest.fixture(scope="module", params=MODELS)
def study(request):
    return get_study(request.param)


@pytest.fixture(scope="module")
def data(study):
    images, labels = study.eval_data()
    return images[:N_AGREEMENT], labels[:N_AGREEMENT]


@pytest.fixture(scope="module")
def model(study):
    return study.build_model()


@pytest.fixture(scope="module")
def fp32_pred(model, data):
    with torch.no_grad():
        return model(data[0][:N_AGREEMENT]).argmax(1)


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
    meta = read_study(study)
    assert meta.reference_metric > 0.95  # fp32 top-1 on the first 1000 test images
    trials = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(trials) == 2
    assert all(trial_status(t) == "ok" for t in trials)
    measured = [t for t in trials if TrialRecord.of(t).duplicate_of is None]
    assert all(TrialRecord.of(t).metrics["throughput_samples_per_s"] > 0 for t in measured)
    assert set(meta.confirmed) <= {str(t.number) for t in measured}
    r = cli("export", "--study", f"{name}-cpu", "-o", "best.json")
    assert r.returncode == 0, r.stderr
