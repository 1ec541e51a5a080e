"""The mnist_transformer study: its weight list's roles, mixed dtypes, compile. What every
study promises (metadata, weight list in model order, shipped weights, eval data, accuracy)
is checked for all of them in test_study_contract.py."""

from __future__ import annotations

import pytest
import torch

from autotune.backends._torch_dtypes import apply_layer_dtypes
from studies import get_study

N_AGREEMENT = 1000


@pytest.fixture(scope="module")
def study():
    return get_study("mnist_transformer")


@pytest.fixture(scope="module")
def data(study):
    images, labels = study.eval_data()
    return images[:N_AGREEMENT], labels[:N_AGREEMENT]


@pytest.fixture(scope="module")
def fp32_pred(study, data):
    with torch.no_grad():
        return study.build_model()(data[0][:N_AGREEMENT]).argmax(1)


def test_weights_are_the_linears_of_every_block(study):
    model = study.build_model()
    names = [w.name for w in study.weights]
    assert len(names) >= 24
    assert {w.kind for w in study.weights} == {"linear"}
    assert names[:2] == ["embed.weight", "blocks.0.attn.q_proj.weight"]
    assert names[-2:] == ["blocks.3.ffn.fc2.weight", "head.weight"]

    from studies import mnist_transformer
    from studies.models import mnist_transformer as model_module

    assert mnist_transformer.N_LAYERS == model_module.N_LAYERS == len(model.blocks)


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
