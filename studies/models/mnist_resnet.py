"""A deep, narrow residual CNN: many small 3x3 convolutions, bound by per-op cost.

Stem (1->16 channels at 28x28, then 2x2 max-pool), then two stages of residual basic blocks
(conv-BN-ReLU-conv-BN plus the skip): 16 channels at 14x14, then 32 channels at 7x7, the first
block of the second stage striding with a 1x1 projection on its skip. With 12 blocks that is
~80 small ops per forward pass and few FLOPs each, so eager dispatch dominates at small
batches and compilation (BatchNorm folded, ops fused) pays more than on the seed's CNN.
Parameter names: ``stem.weight``, ``stages.S.B.conv1.weight``, ``stages.S.B.conv2.weight``,
``stages.1.0.shortcut.weight``, ``head.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (16, 32)  # channels per stage
BLOCKS_PER_STAGE = 6  # 12 residual blocks, 24 3x3 convs in the blocks
N_CLASSES = 10


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Conv2d | None = None
        self.shortcut_bn: nn.BatchNorm2d | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.shortcut is None else self.shortcut_bn(self.shortcut(x))
        return F.relu(y + skip)


class MNISTResNet(nn.Module):
    """[N, 1, 28, 28] normalised images -> [N, 10] log-probabilities (like the CNN)."""

    def __init__(
        self, widths: tuple[int, ...] = WIDTHS, blocks_per_stage: int = BLOCKS_PER_STAGE
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        stages = []
        c_in = widths[0]
        for i, width in enumerate(widths):
            blocks = [
                BasicBlock(c_in if b == 0 else width, width, 2 if (i > 0 and b == 0) else 1)
                for b in range(blocks_per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem_bn(self.stem(x))), 2)  # 28x28 -> 14x14
        for stage in self.stages:
            x = stage(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.log_softmax(self.head(x), dim=1)
