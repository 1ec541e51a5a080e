"""The model as the tuner needs to know it before the first trial, found by running it once.

One fp32 forward pass on the study's own inputs (two rows of ``example_input`` and two of
the eval set) in a trial process: a model that cannot run on its inputs, an output with
nothing to score, or a metric that returns no number fails here, in one line, instead of
failing every trial. It also reports what the tuner cannot see without torch: the weights
the dtype map may lower (discovered from the model unless the study lists them) and the
metric in force.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from autotune import pytree
from autotune.child.batches import eval_set
from autotune.child.metrics import metric_value, target_of
from autotune.wire import Status, TrialJob, TrialResult

if TYPE_CHECKING:
    from studies import Study

PROBE_ROWS = 2


def run(job: TrialJob, study: Study) -> TrialResult:
    import torch

    model = study.build_model()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build_model() returned a {type(model).__name__}, not an nn.Module")
    weights = study.tunable_weights(model)
    params = dict(model.named_parameters())
    missing = [w.name for w in weights if w.name not in params]
    if missing:
        raise ValueError(f"Study.weights names {', '.join(missing)}, not in the model")
    inputs, labels = eval_set(job, study)
    example = study.example_input(PROBE_ROWS)
    if pytree.rows(example) != PROBE_ROWS:
        raise pytree.BatchError(
            f"example_input({PROBE_ROWS}) gave {pytree.rows(example)} rows, not {PROBE_ROWS}"
        )
    probe = pytree.take(inputs, 0, PROBE_ROWS)
    with torch.no_grad():
        out = pytree.call(model, example)
        scored = pytree.select_output(out, study.output)
        eval_scored = pytree.select_output(pytree.call(model, probe), study.output)
    for what, tensor, n in (("example", scored, PROBE_ROWS), ("eval", eval_scored, None)):
        if not tensor.is_floating_point():
            raise pytree.BatchError(f"the scored output is {tensor.dtype}, not floating point")
        if n is not None and (tensor.dim() == 0 or tensor.shape[0] != n):
            raise pytree.BatchError(
                f"the scored output on {what} inputs has shape {list(tensor.shape)}: dim 0 "
                "must be the batch"
            )
    metric = study.scoring(labels is not None)
    sample_labels = labels[:PROBE_ROWS] if labels is not None else None
    fp32 = eval_scored.float()
    metric_value(metric, fp32, target_of(metric, sample_labels, fp32))
    decoded = study.decode(out)
    return TrialResult(
        Status.OK,
        table=[{"name": w.name, "kind": w.kind} for w in weights],
        artifacts={
            **({"decoded": decoded} if decoded else {}),
            "inputs": pytree.describe(example, "input"),
            "output": pytree.describe(out, "output"),
            "scored": pytree.describe(scored, "output"),
            "eval_rows": str(pytree.rows(inputs)),
            "labels": str(labels is not None).lower(),
            "metric": json.dumps(metric.describe()),
        },
    )
