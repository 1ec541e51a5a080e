"""What an export file must hold before `autotune verify` trusts it, and JSON that stays
JSON (no bare NaN) when `autotune export` writes one.

An export is a file people send each other: every field the replay reads is checked for its
type and range (numbers finite: NaN compares false with everything, so a NaN throughput or
limit would pass any test), and a violation is one line naming the field. Checked in the
current layout (`autotune.records_legacy.export_data`); fields older schemas lack may be
absent.
"""

from __future__ import annotations

import math
from typing import Any

from autotune.errors import UsageError

MIN_MEMORY_LIMIT = 64 * 2**20  # as `autotune.study_options.MIN_MEMORY_LIMIT`


class _Invalid(Exception):
    pass


def check_export(data: dict[str, Any], source: object) -> None:
    """UsageError (one line) for the first field of `data` a replay cannot trust."""
    try:
        _check(data)
    except _Invalid as exc:
        raise UsageError(f"{source} is not a valid autotune export: {exc}") from None


def _check(data: dict[str, Any]) -> None:
    for key in ("model", "backend", "activation_dtype"):
        _text(data, key)
    _integer(data, "batch_size", low=1)
    _integer(data, "optimization_level", low=0)
    _kind(data, "enable_trace", bool)
    _mapping(data, "weight_dtype_overrides", required=True, values=str)
    _mapping(data, "knobs", values=bool | int | float | str)
    _mapping(data, "compile_options")
    _mapping(data, "env", values=str)
    _mapping(data, "weight_groups", values=list)

    metrics = _mapping(data, "metrics", required=True)
    _number(metrics, "throughput_samples_per_s", "metrics.", low=0.0, above=True)
    for key, value in metrics.items():
        if key == "throughput_measurements":
            _numbers(value, "metrics.throughput_measurements")
        elif isinstance(value, list):  # an interval (schema 5), null where not finite
            for i, v in enumerate(value):
                if v is not None:
                    _number({f"{key}[{i}]": v}, f"{key}[{i}]", "metrics.")
        elif key != "throughput_samples_per_s" and value is not None:
            _number(metrics, key, "metrics.")

    protocol = _mapping(data, "protocol")
    if protocol is not None:
        _number(protocol, "measure_seconds", "protocol.", low=0.0, above=True)
        _integer(protocol, "warmup_iters", "protocol.", low=0, required=False)
        _integer(protocol, "eval_limit", "protocol.", low=1, required=False)
        _integer(protocol, "memory_limit_bytes", "protocol.", low=MIN_MEMORY_LIMIT, required=False)
        _number(protocol, "timeout_s", "protocol.", low=0.0, above=True)
        _latency(protocol, "protocol.")
        if protocol.get("objective") is not None:
            _kind(protocol, "objective", str, "protocol.")

    constraint = _mapping(data, "constraint")
    if constraint is not None:
        # Any finite limit: a negative one asks for better than fp32 (strict on purpose).
        _number(constraint, "max_metric_drop", "constraint.")
        _number(constraint, "min_agreement_percent", "constraint.", low=0.0, high=100.0)
        _latency(constraint, "constraint.")
        metric = _mapping(constraint, "metric", "constraint.")
        if metric is not None:
            for key in ("name", "unit"):
                if metric.get(key) is not None:
                    _kind(metric, key, str, "constraint.metric.")
            if metric.get("higher_is_better") is not None:
                _kind(metric, "higher_is_better", bool, "constraint.metric.")

    provenance = _mapping(data, "provenance")
    if provenance is not None:
        for key in ("study", "device", "host"):
            if provenance.get(key) is not None:
                _kind(provenance, key, str, "provenance.")
        for key in ("trial", "threads", "cpu_count"):
            _integer(provenance, key, "provenance.", low=0, required=False)
        _mapping(provenance, "versions", "provenance.")
    for key in ("reference", "objective", "decision"):
        _mapping(data, key)


def _latency(d: dict[str, Any], prefix: str) -> None:
    """The latency budget and the percentile it is stated at (schema 5)."""
    _number(d, "max_latency_ms", prefix, low=0.0, above=True)
    _number(d, "latency_percentile", prefix, low=0.0, high=100.0, above=True)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(d: dict[str, Any], key: str, kind: Any, prefix: str = "") -> Any:
    if key not in d:
        raise _Invalid(f"{prefix}{key} is missing")
    value = d[key]
    # bool is an int to Python; a flag is not a count, nor a count a flag.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        name = getattr(kind, "__name__", str(kind))
        raise _Invalid(f"{prefix}{key} must be {name}, not {_shown(value)}")
    return value


def _text(d: dict[str, Any], key: str) -> None:
    if not _kind(d, key, str):
        raise _Invalid(f"{key} is empty")


def _mapping(
    d: dict[str, Any], key: str, prefix: str = "", *, required: bool = False, values: Any = None
) -> dict[str, Any] | None:
    if d.get(key) is None and not required:
        return None
    m = _kind(d, key, dict, prefix)
    if values is not None:
        allowed = getattr(values, "__args__", (values,))  # the members of a union
        for k, v in m.items():
            if not isinstance(v, values) or (isinstance(v, bool) and bool not in allowed):
                raise _Invalid(f"{prefix}{key}[{k!r}] has the wrong type: {_shown(v)}")
    return m


def _integer(
    d: dict[str, Any], key: str, prefix: str = "", *, low: int, required: bool = True
) -> None:
    if not required and d.get(key) is None:
        return
    value = _kind(d, key, int, prefix)
    if value < low:
        raise _Invalid(f"{prefix}{key} must be at least {low}, not {value}")


def _number(
    d: dict[str, Any],
    key: str,
    prefix: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    above: bool = False,
    required: bool = False,
) -> None:
    if d.get(key) is None and not required:
        return
    value = _kind(d, key, int | float, prefix)
    bad = not math.isfinite(value)
    bad = bad or (low is not None and (value < low or (above and value == low)))
    bad = bad or (high is not None and value > high)
    if bad:
        where = "" if low is None else f" {'above' if above else 'at least'} {low:g}"
        where += "" if high is None else f" and at most {high:g}"
        raise _Invalid(f"{prefix}{key} must be a finite number{where}, not {value!r}")


def _numbers(value: Any, name: str) -> None:
    if not isinstance(value, list):
        raise _Invalid(f"{name} must be a list of numbers, not {_shown(value)}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise _Invalid(f"{name}[{i}] must be a finite number above 0, not {_shown(v)}")


def finite_only(data: Any) -> Any:
    """`data` with every NaN or infinity replaced by None (null), so the JSON written is
    JSON (Python's json writes bare NaN, which other readers refuse)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_only(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_only(v) for v in data]
    return data
