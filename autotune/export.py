"""The best feasible config, exported, and `apply_config` to apply it.

Formats (`autotune export --format`):
- ``json`` (default): the common export, any backend; `load_config`/`apply_config` read it.
- ``tt-mixed-precision``: tt-xla's own mixed-precision file, the flat ``{name glob: dtype}``
  map that ``tt_torch.apply_weight_dtype_overrides(model, "file.json")`` reads.
- ``script``: a runnable Python script that reproduces the trial on a Tenstorrent card with
  tt-xla's public API, in the order of tt-xla's ``examples/pytorch/mnist_performant.py``.
The two tt formats need a study run with ``--backend tt`` and are written by
`autotune.backends.tt_export`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import defaults, records_legacy
from autotune.analysis import (
    Decision,
    TrialRow,
    decide,
    reference_recipe_row,
    trial_rows,
    winner,
)
from autotune.backends import get_backend, tt_export
from autotune.backends.tt_options import compile_options as tt_compile_options
from autotune.errors import UsageError
from autotune.export_check import finite_only
from autotune.fidelity_verdict import FIDELITY_SPACE_NOTE, study_verdict
from autotune.measure import TAIL_ITERATIONS, min_iterations
from autotune.records import TrialRecord, study_record
from autotune.study_options import stored_options
from autotune.wire import TrialConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna
    import torch

# 2 added "protocol" (how the trial was measured, for `autotune verify`), the fp32 top-1,
# and the host to the provenance; 3: the backend's knobs under "knobs"; 4: the study's metric
# (`metric_drop`, `reference_metric` and the constraint in the metric's unit, which it names).
# 5: the objective, the latency budget and percentile (in "constraint" and "protocol"), 95%
# intervals, and how the pick was decided ("decision": the configs tied with it).
# Readers accept every version listed here, older ones upgraded by
# `autotune.records_legacy.export_data`.
EXPORT_SCHEMA = 5
READABLE_SCHEMAS = (*records_legacy.OLD_EXPORT_SCHEMAS, EXPORT_SCHEMA)
# The measurement settings a replay must repeat: the export's key -> the StudyOptions field.
# The keys stay those schema 2 wrote (an older `autotune verify` elsewhere reads them); two
# options have since been renamed after their flags.
PROTOCOL = {
    "measure_seconds": "measure_seconds",
    "warmup_iters": "warmup_iters",
    "eval_limit": "eval_limit",
    "memory_limit_bytes": "memory_limit",
    "timeout_s": "timeout_per_trial",
    # Schema 5: how latency was measured (`autotune.measure.min_iterations`) and ranked.
    "latency_percentile": "latency_percentile",
    "max_latency_ms": "max_latency_ms",
    "objective": "objective",
}
EXPORTED_METRICS = (
    "throughput_samples_per_s",
    "throughput_iqr",
    "latency_ms_p50",
    "latency_ms_p95",
    "accuracy",
    "metric",
    "metric_drop",
    "agreement",
    "pcc",
    "max_abs_error",
)


def export_dict(study: optuna.Study) -> dict[str, Any]:
    row = winner(study)
    decision = decide(trial_rows(study))
    config = TrialConfig.from_dict(row.config)
    backend = get_backend(config.backend)
    trial = study.trials[row.number]
    env_info = TrialRecord.of(trial).environment or {}
    meta = study_record(study)
    options = stored_options(meta.options)
    return {
        "schema": EXPORT_SCHEMA,
        "model": config.model,
        "backend": config.backend,
        "batch_size": config.batch_size,
        "optimization_level": config.optimization_level,
        "enable_trace": config.trace,
        "weight_dtype_overrides": config.weight_dtype_map,
        "activation_dtype": config.activation_dtype,
        "knobs": config.knob_map,
        "compile_options": backend.compile_options(config),
        "env": backend.trial_env(config),
        "metrics": {
            **{k: row.metrics[k] for k in EXPORTED_METRICS if row.metrics.get(k) is not None},
            # Each measurement's median (the first is the trial's own); the figure above is
            # the median over all their blocks pooled.
            "throughput_samples_per_s": row.confirmed_throughput,
            "throughput_measurements": [row.throughput, *row.confirmations],
            # 95% interval of the pooled median (`autotune.measure.quantile_ci`).
            "throughput_ci_95": list(_throughput_interval(row)),
            **_latency(row),
            # fp32's value of the metric on the same eval set: metric_drop is relative to it.
            "reference_metric": meta.reference_metric,
        },
        # How dtype dimensions map to weights, when layers were grouped (deep models).
        "weight_groups": {
            label: members for label, members in meta.weight_groups.items() if members != [label]
        },
        "protocol": {
            **{key: options.get(name) for key, name in PROTOCOL.items()},
            # How many timed iterations the latency percentile rests on (`min_iterations`).
            "latency_rule": f"at least {TAIL_ITERATIONS} timed iterations beyond the "
            f"percentile ({min_iterations(meta.objective.percentile)} for "
            f"p{meta.objective.percentile:g}), at most {defaults.LATENCY_TIME_CAP}x "
            "measure_seconds, where the study constrains or minimizes latency",
        },
        "constraint": {
            "metric": {k: v for k, v in meta.metric.items() if k != "limit"},
            "max_metric_drop": meta.metric_limit,
            "min_agreement_percent": meta.min_agreement,
            "unit": f"{meta.metric.get('unit') or meta.metric.get('name', '')} vs fp32",
            "max_latency_ms": meta.objective.max_latency_ms,
            "latency_percentile": meta.objective.percentile,
        },
        "objective": {"kind": meta.objective.kind, "answers": meta.objective.says},
        "decision": _decision(decision, row),
        # The backend's reference recipe measured in the same study (None where it has none).
        "reference": _reference(study, row),
        # Where the trials named a math fidelity: the cheapest that met the constraint, by
        # the card's matmul rate, and the fidelities a card study need not try.
        **_fidelity(study, meta),
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


def _fidelity(study: optuna.Study, meta: Any) -> dict[str, Any]:
    verdict = study_verdict(study, meta)
    return {} if verdict is None else {"math_fidelity": verdict.to_dict()}


def _throughput_interval(row: TrialRow) -> tuple[float, float]:
    pooled = row.pooled
    if pooled is None:
        return (row.throughput or 0.0, row.throughput or 0.0)
    return pooled.throughput_ci


def _latency(row: TrialRow) -> dict[str, Any]:
    """The study's latency percentile over all measurements, with its 95% interval."""
    objective = replace(row.objective, kind="latency")
    latency = replace(row, objective=objective)
    if latency.figure is None:
        return {}
    return {
        objective.latency_key: latency.figure,
        f"{objective.latency_key}_ci_95": list(latency.interval),
    }


def _decision(decision: Decision | None, pick: TrialRow) -> dict[str, Any]:
    """How the pick was decided: separated from the next config, or tied within noise with
    others (listed: any of them serves as well, up to noise)."""
    if decision is None:
        return {}

    def entry(r: TrialRow) -> dict[str, Any]:
        return {
            "trial": r.number,
            "config": r.config,
            "figure": r.figure,
            "ci_95": list(r.interval or ()),
        }

    tied = [r for r in (decision.leader, *decision.tied) if r.number != pick.number]
    return {
        "summary": decision.summary(),
        "separated": decision.separated,
        "tie_break": "the smaller batch, then the lower optimization level, then no trace",
        "tied_with": [entry(r) for r in tied],
        "runner_up": entry(decision.runner_up) if decision.runner_up is not None else None,
    }


def _reference(study: optuna.Study, pick_row: TrialRow) -> dict[str, Any] | None:
    ref = reference_recipe_row(study, trial_rows(study))
    if ref is None or not ref.confirmed_throughput:
        return None
    return {
        "what": "the reference recipe on this backend",
        "trial": ref.number,
        "config": ref.config,
        "throughput_samples_per_s": ref.confirmed_throughput,
        "speedup": pick_row.confirmed_throughput / ref.confirmed_throughput,
    }


FORMATS = ("json", *tt_export.FORMATS)


def check_format(study: optuna.Study, fmt: str) -> None:
    """Refuse a tt format for a study of another backend (before looking for a trial)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt in tt_export.FORMATS:
        backend = study_record(study).backend
        tt_export.require_tt(backend, fmt, study.study_name)


def save(text: str, out: Path | None, fmt: str) -> None:
    if out is not None:
        out.write_text(text)
        if fmt == "script":
            out.chmod(out.stat().st_mode | 0o111)


def notes(data: dict[str, Any], fmt: str) -> list[str]:
    """What a user of the `fmt` export should know that the file cannot say."""
    found = []
    # tt-xla's options from the knobs: a cpu-emulate-tt study's compile_options are the CPU's.
    options = tt_compile_options(data.get("knobs", {}))
    if fmt == "tt-mixed-precision" and options:
        listed = ", ".join(f"{k}={v}" for k, v in options.items())
        option = "option" if len(options) == 1 else "options"
        found.append(
            f"the trial also set the compile {option} {listed}, which a weight map cannot "
            "carry (see --format json or script)"
        )
    verdict = data.get("math_fidelity") or {}
    cheapest, ran = verdict.get("cheapest_feasible"), data.get("knobs", {}).get("math_fidelity")
    if cheapest and ran and cheapest != ran:
        found.append(
            f"the pick ran math_fidelity={ran} (the fastest here); the cheapest fidelity that "
            f"met the constraint, by the card's matmul rate, is {cheapest} "
            "(the export's math_fidelity)"
        )
    if verdict.get("ruled_out"):
        values = json.dumps(verdict["card_space"]["math_fidelity"])  # a TOML array too
        found.append(FIDELITY_SPACE_NOTE.format(values=values))
    return found


def render(data: dict[str, Any], fmt: str) -> str:
    """An `export_dict` as the text of format `fmt` (one of FORMATS)."""
    if fmt == "json":  # JSON with null where a figure is not finite, never a bare NaN
        return json.dumps(finite_only(data), indent=2, allow_nan=False) + "\n"
    if fmt == "tt-mixed-precision":
        return json.dumps(tt_export.mixed_precision_map(data), indent=2) + "\n"
    if fmt == "script":
        return tt_export.runnable_script(data)
    raise UsageError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")


def load_config(source: str | Path | dict[str, Any]) -> TrialConfig:
    """A TrialConfig from an exported JSON file (path) or its parsed dict."""
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    check_schema(data)
    data = records_legacy.export_data(data)
    return TrialConfig(
        model=data["model"],
        backend=data["backend"],
        batch_size=data["batch_size"],
        optimization_level=data["optimization_level"],
        trace=data["enable_trace"],
        activation_dtype=data["activation_dtype"],
        weight_dtypes=tuple(data["weight_dtype_overrides"].items()),
        knobs=tuple(data.get("knobs", {}).items()),
    )


def check_schema(data: Any) -> None:
    if not isinstance(data, dict) or "schema" not in data:
        raise UsageError("not an autotune export (no schema version)")
    if isinstance(data["schema"], bool) or data["schema"] not in READABLE_SCHEMAS:
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
    in batches of the exported `batch_size`. The backend's `trial_env` variables (the
    export's "env") must be set before the device library is imported.
    """
    config = load_config(source)
    backend = get_backend(config.backend)
    backend.initialize(config)  # runtime setup, e.g. set_device_type("TT"), as a trial does
    return backend.prepare(model, config)
