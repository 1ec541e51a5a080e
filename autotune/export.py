"""The best feasible config as JSON a user can apply, and `apply_config` to apply it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.analysis import TrialRow, best_feasible, trial_rows
from autotune.backends import get_backend
from autotune.config import TrialConfig
from autotune.errors import NothingFoundError, UsageError
from autotune.storage import STUDY_ATTR

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna
    import torch

EXPORT_SCHEMA = 1
EXPORTED_METRICS = (
    "throughput_samples_per_s", "throughput_iqr", "latency_ms_p50", "latency_ms_p95",
    "accuracy", "accuracy_drop", "agreement", "pcc", "max_abs_error",
)


def pick(study: optuna.Study) -> TrialRow:
    row = best_feasible(trial_rows(study))
    if row is None:
        meta = study.user_attrs.get(STUDY_ATTR, {})
        raise NothingFoundError(
            f"study {study.study_name!r} has no feasible trial "
            f"(none measured within {meta.get('max_accuracy_drop', '?')} points of fp32)"
        )
    return row


def export_dict(study: optuna.Study) -> dict[str, Any]:
    row = pick(study)
    config = TrialConfig.from_dict(row.config)
    backend = get_backend(config.backend)
    trial = study.trials[row.number]
    env_info = trial.user_attrs.get("environment", {})
    meta = study.user_attrs.get(STUDY_ATTR, {})
    return {
        "schema": EXPORT_SCHEMA,
        "model": config.model,
        "backend": config.backend,
        "batch_size": config.batch_size,
        "optimization_level": config.optimization_level,
        "enable_trace": config.trace,
        "weight_dtype_overrides": config.weight_dtype_map,
        "activation_dtype": config.activation_dtype,
        "backend_options": config.extra,
        "compile_options": backend.compile_options(config),
        "env": backend.worker_env(config),
        "metrics": {k: row.metrics[k] for k in EXPORTED_METRICS if row.metrics.get(k) is not None},
        "constraint": {"max_accuracy_drop": meta.get("max_accuracy_drop"), "unit": "top-1 points vs fp32"},
        "provenance": {
            "study": study.study_name,
            "trial": row.number,
            "versions": env_info.get("versions", {}),
            "device": env_info.get("device"),
            "threads": env_info.get("threads"),
        },
    }


def write_export(study: optuna.Study, out: Path | None) -> str:
    text = json.dumps(export_dict(study), indent=2) + "\n"
    if out is not None:
        out.write_text(text)
    return text


def load_config(source: str | Path | dict[str, Any]) -> TrialConfig:
    """A TrialConfig from an exported JSON file (path) or its parsed dict."""
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    if data.get("schema") != EXPORT_SCHEMA:
        raise UsageError(f"not an autotune export (schema {data.get('schema')!r})")
    return TrialConfig(
        model=data["model"],
        backend=data["backend"],
        batch_size=data["batch_size"],
        optimization_level=data["optimization_level"],
        trace=data["enable_trace"],
        activation_dtype=data["activation_dtype"],
        weight_dtypes=tuple(data["weight_dtype_overrides"].items()),
        extras=tuple(data.get("backend_options", {}).items()),
    )


def apply_config(
    model: torch.nn.Module, source: str | Path | dict[str, Any]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply an exported config to an fp32 model the way the tuner measured it.

    Returns the prepared (compiled) model. Feed it inputs through the backend's input
    conversion, e.g. `x.to(torch.bfloat16)` for a bf16 config (and channels_last if set),
    in batches of the exported `batch_size`. The backend's `worker_env` variables (the
    export's "env") must be set before the device library is imported.
    """
    config = load_config(source)
    return get_backend(config.backend).prepare(model, config)
