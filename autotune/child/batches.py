"""The study's data as the trial process feeds it to the model: batches of any structure
(`autotune.pytree`), moved to the device tensor by tensor, outputs brought back and the
scored one selected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune import pytree

if TYPE_CHECKING:
    import torch

    from autotune.backends import Backend
    from autotune.wire import TrialConfig, TrialJob
    from studies import Study


def eval_set(job: TrialJob, study: Study) -> tuple[Any, torch.Tensor | None]:
    """The study's eval inputs and labels, cut to `eval_limit` rows; checked to be batches
    (one dim 0 everywhere) with one label per row."""
    inputs, labels = study.eval_data()
    n = pytree.rows(inputs)
    if labels is not None and len(labels) != n:
        raise pytree.BatchError(f"eval_data() gave {n} inputs but {len(labels)} labels")
    if job.eval_limit:
        inputs = pytree.take(inputs, 0, job.eval_limit)
        labels = labels[: job.eval_limit] if labels is not None else None
    return inputs, labels


def host_batch(backend: Backend, x: Any, config: TrialConfig) -> Any:
    """`backend.host_input` on every floating-point tensor (the others stay as they are)."""
    return pytree.tree_map(
        lambda t: backend.host_input(t, config) if t.is_floating_point() else t, x
    )


def to_device(backend: Backend, x: Any, config: TrialConfig) -> Any:
    """Every tensor of the batch to the device (`Backend.to_device` casts floating ones)."""
    return pytree.tree_map(lambda t: backend.to_device(t, config), x)


def to_host(backend: Backend, y: Any) -> Any:
    return pytree.tree_map(backend.to_host, y)


def eval_outputs(
    run: Any, backend: Backend, study: Study, inputs: Any, config: TrialConfig
) -> torch.Tensor:
    """The scored output (float32) for every eval row at the trial's batch size; the last
    batch is zero-padded, so a compiled model sees one shape only."""
    import torch

    n = pytree.rows(inputs)
    bs = config.batch_size
    outs = []
    for chunk in pytree.split(inputs, bs):
        out = to_host(
            backend, pytree.call(run, to_device(backend, pytree.pad_rows(chunk, bs), config))
        )
        outs.append(pytree.select_output(out, study.output).float())
    return torch.cat(outs)[:n]
