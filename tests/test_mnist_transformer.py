"""The mnist_transformer study: discovery, weight list, real accuracy, mixed dtypes, compile."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from autotune.backends._torch_dtypes import apply_layer_dtypes
from studies import get_study, study_names

# The shipped weights score 98.99% on the full 10k test set and 98.75% on its first 2000
# images (`python -m studies.training.train_mnist_transformer --epochs 8`); allow 0.5 points.
ACCURACY_FIRST_2000 = 0.9875
N_ACCURACY = 2000
N_AGREEMENT = 1000


@pytest.fixture(scope="module")
def study():
    return get_study("mnist_transformer")


@pytest.fixture(scope="module")
def data(study):
    images, labels = study.eval_data()
    return images[:N_ACCURACY], labels[:N_ACCURACY]


@pytest.fixture(scope="module")
def fp32_pred(study, data):
    with torch.no_grad():
        return study.build_model()(data[0][:N_AGREEMENT]).argmax(1)


def _linear_weight_names(model: torch.nn.Module) -> list[str]:
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def test_discovered_with_metadata(study):
    assert "mnist_transformer" in study_names()
    assert study.name == "mnist_transformer"
    assert study.sample_shape == (1, 28, 28)
    assert study.max_batch_size == 4096
    assert study.description


def test_study_module_does_not_import_torch():
    code = "import sys, studies.mnist_transformer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_weights_are_every_linear_in_model_order(study):
    model = study.build_model()
    names = [w.name for w in study.weights]
    assert len(names) >= 24
    assert names == _linear_weight_names(model)
    assert {w.kind for w in study.weights} == {"linear"}
    assert names[:2] == ["embed.weight", "blocks.0.attn.q_proj.weight"]
    assert names[-2:] == ["blocks.3.ffn.fc2.weight", "head.weight"]
    params = dict(model.named_parameters())
    assert all(name in params for name in names)
    assert not model.training

    from studies import mnist_transformer
    from studies.models import mnist_transformer as model_module

    assert mnist_transformer.N_LAYERS == model_module.N_LAYERS == len(model.blocks)


def test_shipped_state_dict_loads_weights_only(study):
    from studies.mnist_transformer import WEIGHTS_FILE

    state = torch.load(WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert set(state) == set(study.build_model().state_dict())
    assert WEIGHTS_FILE.stat().st_size < 3_000_000


def test_accuracy_on_real_test_set(study, data):
    images, labels = data
    assert images.shape == (N_ACCURACY, *study.sample_shape)
    with torch.no_grad():
        out = study.build_model()(images)
    assert out.shape == (N_ACCURACY, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(N_ACCURACY), atol=1e-4)  # log_softmax
    accuracy = (out.argmax(1) == labels).float().mean().item()
    assert accuracy >= max(0.95, ACCURACY_FIRST_2000 - 0.005), accuracy


def test_example_input_runs(study):
    with torch.no_grad():
        assert study.build_model()(study.example_input(3)).shape == (3, 10)


def _agreement(model: torch.nn.Module, images: torch.Tensor, fp32_pred: torch.Tensor) -> float:
    with torch.no_grad():
        out = model(images)
    return (out.argmax(1) == fp32_pred).float().mean().item()


def test_whole_model_bf16(study, data, fp32_pred):
    model = study.build_model().to(torch.bfloat16)
    images = data[0][:N_AGREEMENT].to(torch.bfloat16)
    with torch.no_grad():
        assert model(images).dtype == torch.bfloat16
    assert _agreement(model, images, fp32_pred) >= 0.99


@pytest.mark.parametrize(
    ("weight_map", "activation"),
    [
        # a few bf16 Linears inside an fp32 model
        (
            {"blocks.1.attn.*_proj.weight": "bf16", "blocks.3.ffn.fc1.weight": "bf16"},
            torch.float32,
        ),
        # every weight bf16 (LayerNorms too) with fp32 activations between layers
        ({"default": "bf16"}, torch.float32),
        # bf16 model with fp32 embedding, head and one attention block
        (
            {"embed.weight": "fp32", "head.weight": "fp32", "blocks.2.attn.*": "fp32"},
            torch.bfloat16,
        ),
    ],
)
def test_mixed_layer_dtypes(study, data, fp32_pred, weight_map, activation):
    model = apply_layer_dtypes(study.build_model(), weight_map, activation)
    modules = dict(model.named_modules())
    lowered = {
        name: modules[name].weight.dtype
        for name in (w.name.removesuffix(".weight") for w in study.weights)
    }
    assert set(lowered.values()) - {activation}, lowered  # some Linears run in another dtype
    images = data[0][:N_AGREEMENT].to(activation)
    with torch.no_grad():
        assert model(images).dtype == activation
    assert _agreement(model, images, fp32_pred) >= 0.99


def test_runs_under_torch_compile(study, data):
    model = study.build_model()
    images = data[0][:8]
    with torch.no_grad():
        expected = model(images)
        compiled = torch.compile(model, backend="inductor", dynamic=False)
        actual = compiled(images)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
