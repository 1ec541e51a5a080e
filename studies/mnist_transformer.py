"""MNIST transformer: 4 pre-norm blocks over the 28 image rows, 26 separately lowerable Linears.

A second, larger real study for the dtype-map search: the same inputs and the same real 10k
test set as the `mnist` CNN study, but 26 Linear weights (embedding, q/k/v/out and fc1/fc2 per
block, head). Trained by `python -m studies.training.train_mnist_transformer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies import Weight
from studies.mnist import DATA_DIR, TrainedMNISTStudy

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = DATA_DIR / "mnist_transformer.pt"
N_LAYERS = 4  # must match studies.models.mnist_transformer.N_LAYERS (a test checks)

_BLOCK_LINEARS = (
    "attn.q_proj",
    "attn.k_proj",
    "attn.v_proj",
    "attn.out_proj",
    "ffn.fc1",
    "ffn.fc2",
)


def _linear_weights() -> tuple[Weight, ...]:
    names = ["embed"]
    names += [f"blocks.{i}.{linear}" for i in range(N_LAYERS) for linear in _BLOCK_LINEARS]
    names.append("head")
    return tuple(Weight(f"{name}.weight", "linear") for name in names)


class MNISTTransformerStudy(TrainedMNISTStudy):
    name = "mnist_transformer"
    description = (
        "transformer over MNIST rows (28 tokens, d_model 64, 4 heads, 4 pre-norm blocks, "
        "FFN 128; 26 Linears), real 10k test set"
    )
    weights_file = WEIGHTS_FILE
    weights = _linear_weights()
    max_batch_size = 4096

    def new_model(self) -> torch.nn.Module:
        from studies.models.mnist_transformer import MNISTTransformer

        return MNISTTransformer()


STUDY = MNISTTransformerStudy()
