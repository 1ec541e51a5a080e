"""MNIST MLP: a wide 784-1024-1024-10 perceptron, GEMM-bound, on the real 10k test set.

A study whose optimum differs from the seed CNN's: two large matrix multiplies and nothing
else, so throughput peaks at large batches and bf16 pays wherever the CPU has fast bf16 GEMMs.
Trained by `python -m studies.training.train_mnist_mlp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies import Weight
from studies.mnist import DATA_DIR, TrainedMNISTStudy

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = DATA_DIR / "mnist_mlp.pt"


class MNISTMLPStudy(TrainedMNISTStudy):
    name = "mnist_mlp"
    description = "wide MLP over MNIST pixels (784-1024-1024-10, 1.9M params), real 10k test set"
    weights_file = WEIGHTS_FILE
    weights = tuple(Weight(f"fc{i}.weight", "linear") for i in (1, 2, 3))
    max_batch_size = 4096

    def new_model(self) -> torch.nn.Module:
        from studies.models.mnist_mlp import MNISTMLP

        return MNISTMLP()


STUDY = MNISTMLPStudy()
