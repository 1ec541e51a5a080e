"""Text tables for the terminal (data on stdout; the CLI decides where it goes)."""

from __future__ import annotations

from typing import Any

from autotune.analysis import Decision, TrialRow
from autotune.backends.cpu import COMPILER
from autotune.backends.streams import STREAMS_NAME
from autotune.records import drop_header

#: Knob values a config label leaves out (the defaults every CPU config had before).
QUIET_KNOBS = {STREAMS_NAME: 1, COMPILER.name: COMPILER.choices[0]}


def config_label(config: dict[str, Any]) -> str:
    """A compact one-line config: `bs256 O2 bf16 channels_last fc1.weight=bf16 ...`."""
    if not config:
        return "-"
    parts = [f"bs{config.get('batch_size', '?')}", f"O{config.get('optimization_level', '?')}"]
    if config.get("trace"):
        parts.append("trace")
    parts.append(config.get("activation_dtype", "?"))
    knobs = config.get("knobs", {})
    parts += [k for k, v in knobs.items() if v is True]
    # One stream and inductor are how every CPU config ran before those knobs existed.
    parts += [
        f"{k}={v}" for k, v in knobs.items() if not isinstance(v, bool) and QUIET_KNOBS.get(k) != v
    ]
    act = config.get("activation_dtype")
    # "activation": the cuda backend's name for "the activation dtype" (nothing lowered).
    lowered = {
        g: d for g, d in config.get("weight_dtypes", {}).items() if d not in (act, "activation")
    }
    parts += [f"{g.removesuffix('.weight')}={d}" for g, d in lowered.items()]
    return " ".join(parts)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def trial_table(rows: list[TrialRow], metric: dict[str, Any] | None = None) -> str:
    """One line per trial; `metric` (`StudyRecord.metric`) names the drop's unit."""
    drop = drop_header(metric or {"unit": "points"})
    latency = rows[0].objective.latency_key.removeprefix("latency_ms_") if rows else "p95"
    headers = ["#", "state", "status", "samples/s", "95% CI", "n", f"{latency} ms", drop]
    headers += ["feasible", "config", "note"]
    body = [
        [
            str(r.number),
            r.state,
            r.status,
            num(r.confirmed_throughput),
            interval_text(r),
            str(r.measurements) if r.measured else "-",
            num(_latency(r), ".3g"),
            num(r.metric_drop, ".3f"),
            "yes" if r.feasible else "no" if r.measured else "-",
            config_label(r.config),
            r.message[:60],
        ]
        for r in rows
    ]
    return format_table(headers, body)


def interval_text(r: TrialRow) -> str:
    """The 95% interval of the row's pooled throughput, e.g. ``12,310-12,950``."""
    pooled = r.pooled if r.measured else None
    if pooled is None:
        return "-"
    lo, hi = pooled.throughput_ci
    return f"{lo:,.0f}-{hi:,.0f}"


def _latency(r: TrialRow) -> float | None:
    return r.metrics.get(r.objective.latency_key)


def decision_line(decision: Decision) -> str:
    """The pick with its figures, and how it stands against the others."""
    pick = decision.pick
    o = pick.objective
    figures = f"{num(pick.confirmed_throughput)} samples/s (95% CI {interval_text(pick)})"
    latency = _latency(pick)
    if latency is not None:
        figures += f", {o.latency_key.removeprefix('latency_ms_')} {latency:.3g} ms per batch"
    return (
        f"pick ({o.says}): trial {pick.number}, {config_label(pick.config)}: {figures}; "
        f"{decision.summary()}"
    )


def num(value: Any, fmt: str = ",.0f") -> str:
    """A figure as tables, the HTML report and `verify` print it: "-" where there is none,
    and a value that is not a number (text of an older record) as it is."""
    if value is None:
        return "-"
    return format(value, fmt) if isinstance(value, int | float) else str(value)


def reference_line(reference: TrialRow, best: TrialRow | None) -> str:
    """The reference recipe's throughput, and the pick's as a multiple of it (the study's goal)."""
    ref = reference.confirmed_throughput
    text = (
        f"reference, the reference recipe (trial {reference.number}, "
        f"{config_label(reference.config)}): {num(ref)} samples/s"
    )
    if best is not None and best.confirmed_throughput is not None and ref:
        text += (
            f"; best feasible (trial {best.number}): {num(best.confirmed_throughput)} "
            f"samples/s = {best.confirmed_throughput / ref:.2f}x the reference"
        )
    return text
