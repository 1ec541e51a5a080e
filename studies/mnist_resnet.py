"""MNIST ResNet: a deep, narrow residual CNN (12 blocks of 16/32-channel 3x3 convs).

A study whose optimum differs from the seed CNN's: ~80 small ops per forward pass, so it is
bound by per-op cost (dispatch, memory traffic between unfused ops) rather than FLOPs, and
compilation matters more. 27 weights, grouped by role for the dtype map. Same inputs and real
10k test set as the `mnist` study. Trained by `python -m studies.training.train_mnist_resnet`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies import Weight
from studies.mnist import DATA_DIR, TrainedMNISTStudy

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = DATA_DIR / "mnist_resnet.pt"
# Must match studies.models.mnist_resnet (a test checks): 2 stages of 6 blocks; the first
# block of stage 1 downsamples and has a 1x1 conv on its skip.
N_STAGES = 2
BLOCKS_PER_STAGE = 6


def _weights() -> tuple[Weight, ...]:
    weights = [Weight("stem.weight", "conv")]
    for s in range(N_STAGES):
        for b in range(BLOCKS_PER_STAGE):
            weights += [Weight(f"stages.{s}.{b}.conv{i}.weight", "conv") for i in (1, 2)]
            if s > 0 and b == 0:
                weights.append(Weight(f"stages.{s}.{b}.shortcut.weight", "conv"))
    weights.append(Weight("head.weight", "linear"))
    return tuple(weights)


class MNISTResNetStudy(TrainedMNISTStudy):
    name = "mnist_resnet"
    description = (
        "deep narrow ResNet over MNIST (12 basic blocks, 16/32 channels, BatchNorm; "
        "27 weights, 136k params), real 10k test set"
    )
    weights_file = WEIGHTS_FILE
    weights = _weights()
    max_batch_size = 4096

    def new_model(self) -> torch.nn.Module:
        from studies.models.mnist_resnet import MNISTResNet

        return MNISTResNet()


STUDY = MNISTResNetStudy()
