"""A regression model with a dict of float + int inputs, a dict output and its own metric:
an example user file.

    autotune study --model studies/examples/regressor.py:STUDY --trials 20

Inputs: 8 float features and an int64 category (one of 6). The target is a smooth function
of the features plus a per-category offset; the model (learnt by ``python -m
studies.training.train_examples``) embeds the category, runs an MLP and returns
``{"prediction": [N], "hidden": [N, 64]}``. The study scores ``prediction`` by root mean
squared error against the targets: lower is better, and a config may lose at most 0.01 of
RMSE against fp32 (`--max-metric-drop` changes that).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from studies import Metric, Study

FEATURES, CATEGORIES, WIDTH = 8, 6, 64
WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "example_regressor.pt"


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.category = nn.Embedding(CATEGORIES, 8)
        self.fc1 = nn.Linear(FEATURES + 8, WIDTH)
        self.fc2 = nn.Linear(WIDTH, WIDTH)
        self.fc3 = nn.Linear(WIDTH, WIDTH)
        self.out = nn.Linear(WIDTH, 1)

    def forward(self, features: torch.Tensor, category: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.cat([features, self.category(category)], dim=1)
        h = torch.relu(self.fc1(h))
        h = torch.relu(self.fc2(h)) + h
        h = torch.relu(self.fc3(h)) + h
        return {"prediction": self.out(h).squeeze(1), "hidden": h}


def target(features: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
    offsets = torch.linspace(-1.0, 1.0, CATEGORIES)
    f = features
    return torch.sin(f[:, 0]) + f[:, 1] * f[:, 2] - 0.5 * f[:, 3] ** 2 + offsets[category]


def make_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, FEATURES, generator=gen)
    category = torch.randint(0, CATEGORIES, (n,), generator=gen)
    return {"features": features, "category": category}, target(features, category)


def rmse(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    return math.sqrt(torch.mean((predictions.double() - targets.double()) ** 2).item())


class RegressorStudy(Study):
    name = "regressor"
    description = "MLP regressor over float features + an int64 category, dict output"
    output = "prediction"
    metric = Metric("RMSE", rmse, unit="RMSE", higher_is_better=False, tolerance=0.01)

    def build_model(self) -> nn.Module:
        model = Regressor()
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        return model.eval()

    def eval_data(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return make_data(4000, seed=1)


STUDY = RegressorStudy()
