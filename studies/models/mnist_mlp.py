"""A wide MLP over flattened MNIST pixels: three Linears, GEMM-bound.

Almost all of its time is in two large matrix multiplies (784x1024 and 1024x1024), so unlike
the CNN its throughput keeps rising with batch size until the activations leave the cache.
Parameter names: ``fc1.weight``, ``fc2.weight``, ``fc3.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_INPUTS = 28 * 28
HIDDEN = 1024  # 784-1024-1024-10: 1.86M parameters, 7.5 MB as fp32
N_CLASSES = 10


class MNISTMLP(nn.Module):
    """[N, 1, 28, 28] normalised images -> [N, 10] log-probabilities (like the CNN)."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.fc1 = nn.Linear(N_INPUTS, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, N_CLASSES)
        self.dropout = nn.Dropout(0.2)  # training only; the identity in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.dropout(F.relu(self.fc1(x)))
        x = self.dropout(F.relu(self.fc2(x)))
        return F.log_softmax(self.fc3(x), dim=1)
