"""MNIST: the seed's CNN with trained weights, scored on the real 10k MNIST test set."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from studies import Study, Weight

if TYPE_CHECKING:
    import torch

DATA_DIR = Path(__file__).parent / "data"
MEAN, STD = 0.1307, 0.3081  # the usual MNIST normalisation, used in training too


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] images -> normalised float32 [N, 1, 28, 28]."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


class TrainedMNISTStudy(Study):
    """A model with weights trained on MNIST (shipped in `weights_file`), scored on the
    real 10k MNIST test set that ships with the package."""

    sample_shape = (1, 28, 28)
    weights_file: Path

    @abstractmethod
    def new_model(self) -> torch.nn.Module:
        """The architecture, before its trained weights are loaded."""

    def build_model(self) -> torch.nn.Module:
        import torch

        model = self.new_model()
        state = torch.load(self.weights_file, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()

    def eval_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np
        import torch

        with np.load(DATA_DIR / "mnist_test.npz") as data:
            images, labels = data["images"], data["labels"]
        return normalize(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64))


class MNISTStudy(TrainedMNISTStudy):
    name = "mnist"
    description = "seed MNIST CNN (conv 1-32-64, fc 9216-128-10), real 10k test set"
    weights_file = DATA_DIR / "mnist_cnn.pt"
    weights = (
        Weight("conv1.weight", "conv"),
        Weight("conv2.weight", "conv"),
        Weight("fc1.weight", "linear"),
        Weight("fc2.weight", "linear"),
    )

    def new_model(self) -> torch.nn.Module:
        from studies.models.mnist_cnn import MNISTCNNDropoutModel

        return MNISTCNNDropoutModel()


STUDY = MNISTStudy()
