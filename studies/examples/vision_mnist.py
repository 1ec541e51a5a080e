"""A torchvision CNN trained on MNIST: torchvision's ``mobilenet_v3_small`` built narrow
(``width_mult=0.25``, 10 classes, 120k parameters), its weights shipped in
``studies/data/vision_mobilenet_mnist.pt``. The example of a zoo model with trained weights.

    V=$(tests/vision_venv/setup_venv.sh)   # the vision trial interpreter (torchvision 0.29.1)
    autotune study --model studies/examples/vision_mnist.py:STUDY --trial-python "$V" --trials 20

Data: the 10k MNIST test set that ships with the package (`studies/data/mnist_test.npz`).
``python -m studies.training.train_vision_example`` (run in the vision interpreter) trains on
its first 8000 images; the study scores the last 2000, which training never saw: eval is a
held-out part of MNIST's test split, not the test split itself. Grey images are repeated to
3 channels at 28x28 (the model pools to 1x1 at any size).

torchvision is imported only where the model is built, in trial processes: the tuner side
(the main venv, torch's CPU build) reads this file without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studies.mnist import DATA_DIR, normalize
from studies.sources.zoo import ZooStudy

if TYPE_CHECKING:
    import torch

ARCH = "mobilenet_v3_small"
BUILDER_KWARGS = {"num_classes": 10, "width_mult": 0.25}
WEIGHTS = DATA_DIR / "vision_mobilenet_mnist.pt"
TRAIN_ROWS = 8000  # of the shipped 10k: the first 8000 train, the last 2000 are the eval set


def mnist_split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, 3, 28, 28] float32 normalised, labels int64) of the shipped test set's
    training part (``train``) or held-out part."""
    import numpy as np
    import torch

    with np.load(DATA_DIR / "mnist_test.npz") as data:
        images, labels = data["images"], data["labels"]
    part = slice(0, TRAIN_ROWS) if train else slice(TRAIN_ROWS, None)
    x = normalize(torch.from_numpy(images[part])).expand(-1, 3, -1, -1).contiguous()
    return x, torch.from_numpy(labels[part].astype(np.int64))


class VisionMNISTStudy(ZooStudy):
    def __init__(self) -> None:
        super().__init__("vision_mnist", "torchvision", ARCH, {"weights": str(WEIGHTS)})
        self.builder_kwargs = dict(BUILDER_KWARGS)
        self.description = (
            f"torchvision {ARCH}(width_mult=0.25, 10 classes) trained on 8000 MNIST test "
            "images, scored on the other 2000"
        )

    def eval_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            self._data = mnist_split(train=False)
        return self._data


STUDY = VisionMNISTStudy()
