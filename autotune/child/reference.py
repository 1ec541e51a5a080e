"""The fp32 reference: the outputs every trial's accuracy is measured against.

This module is its one home: cache key, file and computation. The key is a fingerprint of
everything that decides the outputs (the model's name and code, its weights, the eval set,
`eval_limit`), not of a study or a storage URL: every study and sensitivity pass of a model
on this host shares one file, a new database reuses it, and changed weights never meet a
stale reference. The fingerprint needs the model itself, so it is computed in the trial
process (studies build models only there); the tuner asks with a `reference` job
(`autotune.jobs.fp32_reference`) and reads a cached entry with `cached`, without torch.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import pytree
from autotune.child.metrics import metric_value, target_of
from autotune.files import replacing, write_atomic
from autotune.wire import Status, TrialJob, TrialResult

if TYPE_CHECKING:
    import torch

    from studies import Study

VERSION = 3  # part of the key: bump when the computation below changes its outputs
BATCH = 1000


@dataclass(frozen=True)
class Reference:
    path: Path
    # The fp32 model's value of the study's metric on the eval set (top-1 in points, PCC...)
    metric_value: float | None
    fingerprint: str
    environment: dict[str, Any] = field(default_factory=dict)


def cache_path(cache_dir: Path, model: str, fingerprint: str) -> Path:
    return Path(cache_dir) / "reference" / f"{safe_name(model)}-{fingerprint[:20]}.pt"


def safe_name(model: str) -> str:
    """A file-name-safe form of a model name (user studies are ``pkg.module:ATTR``)."""
    return re.sub(r"[^\w.-]", "_", model)


def cached(cache_dir: Path, model: str, fingerprint: str) -> Reference | None:
    """The reference already in `cache_dir` under `fingerprint`, without a trial process."""
    path = cache_path(cache_dir, model, fingerprint)
    info = _read_info(path)
    if info is None:
        return None
    return Reference(path, info.get("metric_value"), fingerprint, info.get("environment", {}))


def fingerprint(
    model_name: str,
    study: Study,
    model: torch.nn.Module,
    inputs: Any,
    labels: torch.Tensor | None,
    eval_limit: int | None,
) -> str:
    """sha256 over what decides the reference outputs (eval set already cut to eval_limit):
    the code of the study, the model and a factory, the weights, the inputs, the labels."""
    h = hashlib.sha256(
        f"autotune-reference-v{VERSION}|{model_name}|{eval_limit}|{study.output}".encode()
    )
    for obj in (type(study), type(model), getattr(study, "factory", None)):
        if obj is None:
            continue
        try:
            source = inspect.getsourcefile(obj)
        except TypeError:  # built in: nothing to read
            source = None
        h.update(Path(source).read_bytes() if source else obj.__qualname__.encode())
    for name, tensor in model.state_dict().items():
        _update(h, name, tensor)
    for name, tensor in pytree.paths(inputs):
        _update(h, f"inputs.{name}", tensor)
    if labels is not None:
        _update(h, "labels", labels)
    return h.hexdigest()


def ensure(
    model_name: str,
    study: Study,
    inputs: Any,
    labels: torch.Tensor | None,
    eval_limit: int | None,
    cache_dir: Path,
    environment: dict[str, Any],
    model: torch.nn.Module | None = None,
    key: str | None = None,
    refresh: bool = False,
) -> tuple[Reference, torch.Tensor]:
    """The reference and its outputs: read from `cache_dir`, or computed and stored there.

    `model` (fp32, from `study.build_model()`) and its `key` may be given when the caller
    has them already."""
    import torch

    model = model if model is not None else study.build_model().eval()
    key = key or fingerprint(model_name, study, model, inputs, labels, eval_limit)
    hit = None if refresh else cached(cache_dir, model_name, key)
    if hit is not None:
        outputs = torch.load(hit.path, map_location="cpu", weights_only=True)
        return hit, outputs
    outputs = compute(model, inputs, study.output)
    metric = study.scoring(labels is not None)
    value = metric_value(metric, outputs, target_of(metric, labels, outputs))
    ref = Reference(cache_path(cache_dir, model_name, key), value, key, environment)
    info = {
        "model": model_name,
        "eval_limit": eval_limit,
        "samples": len(outputs),
        "metric_value": value,
        "fingerprint": key,
        "environment": environment,
    }
    _store(ref.path, outputs, info)
    return ref, outputs


def compute(model: torch.nn.Module, inputs: Any, output: str | int | None = None) -> torch.Tensor:
    """The scored output (`output`, see `pytree.select_output`) of fp32 eager runs, in
    batches (channels_last for convolutions fed one 4-D tensor: the same numbers up to
    summation order, twice as fast on oneDNN)."""
    import torch

    single = isinstance(inputs, torch.Tensor)
    layout = torch.channels_last if single and _has_conv(model) and inputs.dim() == 4 else None
    if layout is not None:
        model = model.to(memory_format=layout)
    outs = []
    with torch.no_grad():
        for chunk in pytree.split(pytree.cast_floating(inputs, torch.float32), BATCH):
            if layout is not None:
                chunk = chunk.contiguous(memory_format=layout)
            outs.append(pytree.select_output(pytree.call(model, chunk), output).float())
    return torch.cat(outs).contiguous()


def run(
    job: TrialJob,
    study: Study,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    environment: dict[str, Any],
) -> TrialResult:
    """The trial process's `reference` mode."""
    if not job.cache_dir:
        raise ValueError("a reference job needs cache_dir")
    ref, outputs = ensure(
        job.config.model,
        study,
        inputs,
        labels,
        job.eval_limit,
        Path(job.cache_dir),
        environment,
        refresh=job.refresh_cache,
    )
    metrics = {"samples": float(len(outputs))}
    if ref.metric_value is not None:
        metrics["metric_value"] = ref.metric_value
    return TrialResult(
        Status.OK,
        metrics=metrics,
        environment=ref.environment,
        artifacts={"reference": str(ref.path), "fingerprint": ref.fingerprint},
    )


def _has_conv(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _update(h: Any, name: str, tensor: torch.Tensor) -> None:
    import torch

    t = tensor.detach().cpu().contiguous()
    h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def _read_info(path: Path) -> dict[str, Any] | None:
    info_path = path.with_suffix(".json")
    if not (path.exists() and info_path.exists()):
        return None
    try:
        return json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None


def _store(path: Path, outputs: torch.Tensor, info: dict[str, Any]) -> None:
    """Outputs, then their info (the info file marks a complete entry); each replaced whole,
    so concurrent studies never read half a file."""
    import torch

    with replacing(path) as f:
        torch.save(outputs, f)
    write_atomic(path.with_suffix(".json"), json.dumps(info, indent=1))
