"""How a study scores a trial's outputs, and the unit its accuracy constraint is stated in.

A `Metric` is computed on the scored output of the whole eval set, against the labels or
against the fp32 model's outputs. A trial's *drop* is how much worse it scores than the fp32
model, in the metric's unit (positive = worse, whatever the direction); the constraint is
``drop <= tolerance`` (`--max-metric-drop`, default the metric's own tolerance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Metric:
    """`fn(outputs, target) -> float`, where `outputs` is the scored output of the eval set
    (float32, on the CPU, rows in eval-set order) and `target` the labels (``against=
    "labels"``) or the fp32 model's outputs (``against="fp32"``)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    unit: str = ""
    higher_is_better: bool = True
    tolerance: float = 0.5  # the default allowed drop, in `unit`
    against: Literal["labels", "fp32"] = "labels"

    def drop(self, reference_value: float, value: float) -> float:
        """How much worse `value` is than the fp32 model's `reference_value` (>0: worse)."""
        return reference_value - value if self.higher_is_better else value - reference_value

    def describe(self) -> dict[str, Any]:
        """What the tuner side stores and shows: everything but the function."""
        return {
            "name": self.name,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "tolerance": self.tolerance,
            "against": self.against,
        }


def top1_points(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (points): argmax over the last dim against the labels."""
    return 100.0 * (outputs.argmax(dim=-1) == labels).double().mean().item()


def agreement_points(outputs: torch.Tensor, fp32: torch.Tensor) -> float:
    """Percent of top-1 predictions equal to the fp32 model's."""
    return 100.0 * (outputs.argmax(dim=-1) == fp32.argmax(dim=-1)).double().mean().item()


def pearson(outputs: torch.Tensor, fp32: torch.Tensor) -> float:
    """Pearson correlation of all output values with fp32's (tt-xla's tests use PCC)."""
    import torch

    a, b = outputs.double().flatten(), fp32.double().flatten()
    if torch.equal(a, b):
        return 1.0  # also for constant outputs, whose correlation is undefined
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def mean_cosine(outputs: torch.Tensor, fp32: torch.Tensor) -> float:
    """Mean cosine similarity of each row with fp32's (embedding models)."""
    import torch

    a, b = outputs.double().flatten(1), fp32.double().flatten(1)
    return torch.nn.functional.cosine_similarity(a, b, dim=1).mean().item()


TOP1 = Metric("top-1 accuracy", top1_points, unit="points", tolerance=0.5)
AGREEMENT = Metric(
    "top-1 agreement with fp32", agreement_points, unit="points", tolerance=0.5, against="fp32"
)
PCC = Metric("PCC vs fp32", pearson, unit="", tolerance=0.01, against="fp32")
COSINE = Metric("cosine similarity vs fp32", mean_cosine, unit="", tolerance=0.01, against="fp32")
#: The metrics `--metric NAME` (a model spec's ``?metric=NAME``) puts in force for any study.
BUILTIN = {"top1": TOP1, "agreement": AGREEMENT, "pcc": PCC, "cosine": COSINE}
