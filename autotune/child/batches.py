"""The study's data as the trial process feeds it to the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from autotune.wire import TrialJob
    from studies import Study


def eval_set(job: TrialJob, study: Study) -> tuple[torch.Tensor, torch.Tensor | None]:
    inputs, labels = study.eval_data()
    if job.eval_limit:
        inputs = inputs[: job.eval_limit]
        labels = labels[: job.eval_limit] if labels is not None else None
    return inputs, labels
