"""How a trial's outputs compare with the fp32 reference's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def accuracy_metrics(
    outputs: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor | None,
    reference_accuracy: float | None,
) -> dict[str, float]:
    """Compare a trial's outputs with the fp32 reference outputs (both [N, classes])."""
    import torch

    out = outputs.double()
    ref = reference.double()
    pred = out.argmax(dim=1)
    metrics = {
        "agreement": (pred == ref.argmax(dim=1)).double().mean().item(),
        "pcc": torch.corrcoef(torch.stack([out.flatten(), ref.flatten()]))[0, 1].item(),
        "max_abs_error": (out - ref).abs().max().item(),
        "mean_abs_error": (out - ref).abs().mean().item(),
    }
    if labels is not None:
        metrics["accuracy"] = (pred == labels).double().mean().item()
        if reference_accuracy is not None:
            # In points (percentage points of top-1), the unit of --max-accuracy-drop.
            metrics["accuracy_drop"] = 100.0 * (reference_accuracy - metrics["accuracy"])
    else:
        metrics["accuracy_drop"] = 100.0 * (1.0 - metrics["agreement"])
    return metrics
