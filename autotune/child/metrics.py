"""How a trial's outputs score against the fp32 reference's, under the study's metric."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from studies.metrics import TOP1, agreement_points, pearson

if TYPE_CHECKING:
    import torch

    from studies.metrics import Metric


class MetricError(ValueError):
    """The study's metric could not score the outputs (a failed trial, with this reason)."""


def metric_value(metric: Metric, outputs: torch.Tensor, target: torch.Tensor | None) -> float:
    """`metric` on `outputs`, checked: a finite real number (a one-element tensor counts)."""
    import torch

    if target is None:
        raise MetricError(f"metric {metric.name!r} needs labels; eval_data() gave none")
    value: Any = metric.fn(outputs, target)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MetricError(f"metric {metric.name!r} returned a {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise MetricError(f"metric {metric.name!r} returned {value}")
    return float(value)


def target_of(metric: Metric, labels: torch.Tensor | None, fp32: torch.Tensor) -> Any:
    return fp32 if metric.against == "fp32" else labels


def score(
    outputs: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor | None,
    metric: Metric,
    reference_value: float | None,
) -> dict[str, float]:
    """The trial's figures against the fp32 outputs (both [N, ...], float): the metric, its
    drop from fp32's value in the metric's unit, and the output fidelity (PCC, max/mean
    absolute error; top-1 agreement where the output has classes on its last dim)."""
    out, ref = outputs.double(), reference.double()
    figures = {
        "pcc": pearson(out, ref),
        "max_abs_error": (out - ref).abs().max().item(),
        "mean_abs_error": (out - ref).abs().mean().item(),
    }
    if out.dim() >= 2 and out.shape[-1] > 1:
        figures["agreement"] = agreement_points(out, ref) / 100.0
    value = metric_value(metric, outputs, target_of(metric, labels, reference))
    figures["metric"] = value
    if metric is TOP1:
        figures["accuracy"] = value / 100.0
    if reference_value is not None:
        drop = metric.drop(reference_value, value)
        figures["metric_drop"] = drop
    return figures
