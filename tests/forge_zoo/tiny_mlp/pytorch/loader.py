"""A loader shaped as tt-forge-models' are: variants, `load_model(dtype_override=...)`,
`load_inputs(dtype_override=...)` that takes no batch size (its batch is 1, as in about 100
of the zoo's loaders), a tuple output that `unpack_forward_output` unpacks, and a
`decode_output` that prints its answer, as many of the zoo's do."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

import torch
from torch import nn

from ...base import ForgeModel


class ModelVariant(StrEnum):
    BASE = "base"
    WIDE = "wide"


class TinyMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc2(torch.relu(self.fc1(image.flatten(1)))))
        return self.head(h), h


class ModelLoader(ForgeModel):
    NAME = "tiny_mlp"
    _VARIANTS: ClassVar[dict[ModelVariant, str]] = {
        ModelVariant.BASE: "width 32",
        ModelVariant.WIDE: "width 96",
    }
    DEFAULT_VARIANT = ModelVariant.BASE

    def load_model(self, *, dtype_override=None, **kwargs):
        torch.manual_seed(0)
        model = TinyMLP(96 if self._variant == ModelVariant.WIDE else 32)
        return model.to(dtype_override) if dtype_override is not None else model

    def load_inputs(self, dtype_override=None):
        image = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
        return image.to(dtype_override) if dtype_override is not None else image

    def unpack_forward_output(self, fwd_output):
        return fwd_output[0]

    def decode_output(self, outputs):
        print(f"predicted class: {int(outputs[0][0].argmax())}")
