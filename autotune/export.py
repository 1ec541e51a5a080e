"""The best feasible config, exported, and `apply_config` to apply it.

Formats (`autotune export --format`):
- ``json`` (default): the common export, any backend; `load_config`/`apply_config` read it.
- ``tt-mixed-precision``: tt-xla's own mixed-precision file, the flat ``{name glob: dtype}``
  map that ``tt_torch.apply_weight_dtype_overrides(model, "file.json")`` reads.
- ``script``: a runnable Python script that reproduces the trial on a Tenstorrent card with
  tt-xla's public API, in the order of tt-xla's ``examples/pytorch/mnist_performant.py``.
The two tt formats need a study run with ``--backend tt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.analysis import TrialRow, best_feasible, seed_recipe_row, trial_rows
from autotune.backends import get_backend
from autotune.config import TrialConfig
from autotune.errors import NothingFoundError, UsageError
from autotune.storage import STUDY_ATTR

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna
    import torch

# 2 added "protocol" (how the trial was measured, for `autotune verify`), the fp32 top-1,
# and the host to the provenance. Readers accept every version listed here.
EXPORT_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
# The measurement settings a replay must repeat (StudyOptions fields).
PROTOCOL_KEYS = ("measure_seconds", "warmup_iters", "eval_limit", "memory_limit_bytes", "timeout_s")
EXPORTED_METRICS = (
    "throughput_samples_per_s",
    "throughput_iqr",
    "latency_ms_p50",
    "latency_ms_p95",
    "accuracy",
    "accuracy_drop",
    "agreement",
    "pcc",
    "max_abs_error",
)


def pick(study: optuna.Study) -> TrialRow:
    row = best_feasible(trial_rows(study))
    if row is None:
        meta = study.user_attrs.get(STUDY_ATTR, {})
        raise NothingFoundError(
            f"study {study.study_name!r} has no feasible trial "
            f"(none measured within {meta.get('max_accuracy_drop', '?')} points of fp32"
            + (f" and {meta['min_agreement']:g}% agreement" if meta.get("min_agreement") else "")
            + ")"
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
        "metrics": {
            **{k: row.metrics[k] for k in EXPORTED_METRICS if row.metrics.get(k) is not None},
            # Each measurement's median (the first is the trial's own); the figure above is
            # the median over all their blocks pooled.
            "throughput_samples_per_s": row.confirmed_throughput,
            "throughput_measurements": [row.throughput, *row.confirmations],
            # fp32's top-1 on the same eval set: accuracy_drop is relative to it.
            "reference_accuracy": meta.get("reference_accuracy"),
        },
        # How dtype dimensions map to weights, when layers were grouped (deep models).
        "weight_groups": {
            label: members
            for label, members in meta.get("weight_groups", {}).items()
            if members != [label]
        },
        "protocol": {k: meta.get("options", {}).get(k) for k in PROTOCOL_KEYS},
        "constraint": {
            "max_accuracy_drop": meta.get("max_accuracy_drop"),
            "min_agreement_percent": meta.get("min_agreement"),
            "unit": "top-1 points vs fp32",
        },
        # The backend's seed recipe measured in the same study (None where it has none).
        "reference": _reference(study, row),
        "provenance": {
            "study": study.study_name,
            "trial": row.number,
            "versions": env_info.get("versions", {}),
            "device": env_info.get("device"),
            "threads": env_info.get("threads"),
            "host": env_info.get("hostname"),
            "cpu_count": env_info.get("cpu_count"),
        },
    }


def _reference(study: optuna.Study, pick_row: TrialRow) -> dict[str, Any] | None:
    ref = seed_recipe_row(study, trial_rows(study))
    if ref is None or not ref.confirmed_throughput:
        return None
    return {
        "what": "the seed's recipe on this backend",
        "trial": ref.number,
        "config": ref.config,
        "throughput_samples_per_s": ref.confirmed_throughput,
        "speedup": pick_row.confirmed_throughput / ref.confirmed_throughput,
    }


FORMATS = ("json", "tt-mixed-precision", "script")
TT_FORMATS = ("tt-mixed-precision", "script")
TT_WEIGHT_DTYPES = ("bf16", "bfp_bf8", "bfp_bf4")  # what apply_weight_dtype_overrides accepts


def check_format(study: optuna.Study, fmt: str) -> None:
    """Refuse a tt format for a study of another backend (before looking for a trial)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt in TT_FORMATS:
        _require_tt(study.user_attrs.get(STUDY_ATTR, {}).get("backend"), fmt, study.study_name)


def save(text: str, out: Path | None, fmt: str) -> None:
    if out is not None:
        out.write_text(text)
        if fmt == "script":
            out.chmod(out.stat().st_mode | 0o111)


def notes(data: dict[str, Any], fmt: str) -> list[str]:
    """What a user of the `fmt` export should know that the file cannot say."""
    found = []
    weight_dtype = data.get("compile_options", {}).get("experimental_weight_dtype")
    if fmt == "tt-mixed-precision" and weight_dtype:
        found.append(
            f"the trial also set the compile option experimental_weight_dtype={weight_dtype}, "
            "which a weight map cannot carry (see --format json or script)"
        )
    return found


def render(data: dict[str, Any], fmt: str) -> str:
    """An `export_dict` as the text of format `fmt` (one of FORMATS)."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "tt-mixed-precision":
        return json.dumps(tt_mixed_precision(data), indent=2) + "\n"
    if fmt == "script":
        return tt_script(data)
    raise UsageError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")


# The weight map of a study that emulated TT numerics on the CPU is a valid tt-xla map; its
# compile options are not (they are the CPU's), so only the map can be exported for TT.
_TT_MAP_BACKENDS = ("tt", "cpu-emulate-tt")


def _require_tt(backend: str | None, fmt: str, study: str | None = None) -> None:
    allowed = _TT_MAP_BACKENDS if fmt == "tt-mixed-precision" else ("tt",)
    if backend is not None and backend not in allowed:
        which = f"study {study!r}" if study else "this export"
        raise UsageError(
            f"--format {fmt} is for Tenstorrent studies; {which} ran on backend {backend!r} "
            "(use --format json, or a study run with --backend tt)"
        )


def tt_mixed_precision(data: dict[str, Any]) -> dict[str, str]:
    """tt-xla's mixed-precision map: ``{parameter name glob: dtype}``, flat, in order.

    Exactly what ``tt_torch.apply_weight_dtype_overrides`` reads from a dict or a JSON file
    (e.g. ``{"fc1.weight": "bfp_bf8", "fc2.weight": "bf16"}``); weights it does not name stay
    in the model's bf16. The compiler-wide ``experimental_weight_dtype`` is a compile option,
    not part of the map (`notes` says so when the trial used it).
    """
    _require_tt(data.get("backend"), "tt-mixed-precision")
    overrides = dict(data["weight_dtype_overrides"])
    for name, dtype in overrides.items():
        if not isinstance(name, str) or dtype not in TT_WEIGHT_DTYPES:
            raise UsageError(
                f"weight dtype override {name!r}: {dtype!r} is not one of "
                f"{', '.join(TT_WEIGHT_DTYPES)}"
            )
    return overrides


_SCRIPT = '''\
#!/usr/bin/env python3
"""Run a model on a Tenstorrent card with the config autotune found, and time it.

The recipe is tt-xla's examples/pytorch/mnist_performant.py with the tuned settings. Run it
with the Python of the Tenstorrent environment (pjrt-plugin-tt installed), with the autotune
checkout importable (pip install -e . there, or PYTHONPATH=/path/to/autotune):

    python THIS_FILE [LOOPS]    # LOOPS timed iterations (default DEFAULT_LOOPS below)
"""

# Generated by `autotune export --format script`.
# Model {model_literal}, study {study}, trial {trial}.
# Measured there: {measured}.

import os
import sys
import time

{env_block}

import torch
import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.runtime as xr
import tt_torch  # registers the "tt" torch.compile backend

from studies import get_study

MODEL = {model_literal}
BATCH_SIZE = {batch_size}
WEIGHT_DTYPE_OVERRIDES = {overrides}
COMPILE_OPTIONS = {compile_options}
WARMUP_LOOPS = 3  # the 1st iteration compiles, the 2nd captures the trace
DEFAULT_LOOPS = {default_loops}


def main(loops):
    # By default torch_xla uses the CPU device: select the Tenstorrent one.
    xr.set_device_type("TT")

    study = get_study(MODEL)
    model = study.build_model()
    model = model.eval()
    model = model.to(torch.bfloat16)
    if WEIGHT_DTYPE_OVERRIDES:  # before compile, so the overrides are in the compiled graph
        tt_torch.apply_weight_dtype_overrides(model, WEIGHT_DTYPE_OVERRIDES)
    torch_xla.set_custom_compile_options(COMPILE_OPTIONS)
    model.compile(backend="tt")
    device = xm.xla_device()
    model = model.to(device)

    inputs = study.example_input(BATCH_SIZE).to(torch.bfloat16)
    run_inference(model, device, inputs, WARMUP_LOOPS)
    seconds = run_inference(model, device, inputs, loops)
    print(f"Average throughput: {{round(BATCH_SIZE * loops / seconds)}} samples/second")


def run_inference(model, device, inputs, loops):
    """Seconds for `loops` iterations of: input to device, model, output to host."""
    total_ns = 0
    with torch.no_grad():
        for _ in range(loops):
            start = time.perf_counter_ns()
            output = model(inputs.to(device))
            output.to("cpu")
            total_ns += time.perf_counter_ns() - start
    return total_ns / 1e9


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_LOOPS)
'''


def _lit(value: Any) -> str:
    """A Python literal: strings double-quoted (a JSON string is a valid Python one)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _dict_lit(d: dict[str, Any]) -> str:
    if not d:
        return "{}"
    return "{\n" + "".join(f"    {_lit(k)}: {_lit(v)},\n" for k, v in d.items()) + "}"


def tt_script(data: dict[str, Any], default_loops: int = 128) -> str:
    """A runnable script reproducing the exported trial with tt-xla's public API.

    Same calls, same order and same values as the ``tt`` backend's trial: the environment
    (``data["env"]``) set before torch_xla is imported, ``set_device_type("TT")``, the
    study's model in eval mode and bf16, the weight overrides, ``data["compile_options"]``
    exactly, ``model.compile(backend="tt")``, ``xm.xla_device()``, then 3 warmup and
    `default_loops` timed iterations (``python script.py LOOPS`` changes the count).
    """
    _require_tt(data.get("backend"), "script")
    overrides = tt_mixed_precision(data)
    env = {str(k): str(v) for k, v in data.get("env", {}).items()}
    if env:
        env_block = "# Read by the Tenstorrent runtime when torch_xla is imported: set it first.\n"
        env_block += "".join(f"os.environ[{_lit(k)}] = {_lit(v)}\n" for k, v in env.items())
    else:
        env_block = "# Trace is off: no trace region to reserve.\n"
    metrics = data.get("metrics", {})
    measured = []
    if metrics.get("throughput_samples_per_s") is not None:
        measured.append(f"{metrics['throughput_samples_per_s']:,.0f} samples/s (median)")
    if metrics.get("accuracy_drop") is not None:
        measured.append(f"top-1 drop {metrics['accuracy_drop']:.3g} points vs fp32")
    provenance = data.get("provenance", {})
    return _SCRIPT.format(
        model_literal=_lit(str(data["model"])),
        study=_lit(provenance.get("study")),
        trial=provenance.get("trial"),
        measured=", ".join(measured) or "no metrics recorded",
        env_block=env_block.rstrip("\n"),
        batch_size=int(data["batch_size"]),
        overrides=_dict_lit(overrides),
        compile_options=_dict_lit({str(k): v for k, v in data["compile_options"].items()}),
        default_loops=int(default_loops),
    )


def load_config(source: str | Path | dict[str, Any]) -> TrialConfig:
    """A TrialConfig from an exported JSON file (path) or its parsed dict."""
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    check_schema(data)
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


def check_schema(data: Any) -> None:
    if not isinstance(data, dict) or "schema" not in data:
        raise UsageError("not an autotune export (no schema version)")
    if data["schema"] not in READABLE_SCHEMAS:
        raise UsageError(
            f"unknown export schema version {data['schema']!r} (this autotune reads "
            f"{', '.join(map(str, READABLE_SCHEMAS))}; a newer autotune wrote it?)"
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
    backend = get_backend(config.backend)
    backend.initialize(config)  # runtime setup, e.g. set_device_type("TT"), as the worker does
    return backend.prepare(model, config)
