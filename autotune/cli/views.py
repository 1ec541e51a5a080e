"""What the commands print, built from their data: tables and JSON documents.

Imported inside the commands (it reads trial rows and plot data), so --help stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.records import drop_header
from autotune.tables import decision_line, format_table, reference_line, trial_table

if TYPE_CHECKING:
    from autotune.analysis import TrialRow
    from autotune.plots import ParetoPlotData
    from autotune.records import StudyRecord


def trial_json(row: TrialRow) -> dict[str, Any]:
    pooled = row.pooled if row.measured else None
    return row.__dict__ | {
        "throughput": row.throughput,
        "confirmed_throughput": row.confirmed_throughput,
        "throughput_ci_95": list(pooled.throughput_ci) if pooled is not None else None,
        "objective": row.objective.kind,
    }


def failures_line(rows: list[TrialRow], failures: dict[str, int]) -> str:
    summary = ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "none"
    return f"{len(rows)} trials; not measured, by reason: {summary}"


def show_table(
    rows: list[TrialRow], failures: dict[str, int], record: StudyRecord | None = None
) -> str:
    """Every trial, then the failures and the pick; `record` says what the drop is a drop
    of."""
    from autotune.analysis import decide

    decision = decide(rows)
    pick = f"\n{decision_line(decision)}" if decision is not None else ""
    if record is None or not record.metric:
        return f"{trial_table(rows)}\n\n{failures_line(rows, failures)}{pick}"
    return (
        f"feasible = {record.feasible_text}\n{trial_table(rows, record.metric)}\n\n"
        f"{failures_line(rows, failures)}{pick}"
    )


def show_json(
    name: str, meta: dict[str, Any], rows: list[TrialRow], failures: dict[str, int]
) -> dict[str, Any]:
    return {
        "study": name,
        "meta": meta,
        "failures": failures,
        "trials": [trial_json(r) for r in rows],
    }


def pareto_table(
    name: str,
    rows: list[TrialRow],
    front: list[TrialRow],
    reference: TrialRow | None,
    best: TrialRow | None,
    metric: dict[str, Any] | None = None,
) -> str:
    """The end of a study: its Pareto set, and the pick against the model's own recipe."""
    from autotune.analysis import decide

    table = trial_table(front, metric)
    text = f"Pareto set of study {name!r} ({len(rows)} trials):\n{table}"
    decision = decide(rows)
    if decision is not None:
        text += "\n" + decision_line(decision)
    if reference is not None:
        text += "\n" + reference_line(reference, best)
    return text


def pareto_json(
    name: str,
    rows: list[TrialRow],
    front: list[TrialRow],
    reference: TrialRow | None,
    best: TrialRow | None,
) -> dict[str, Any]:
    from autotune.analysis import decide

    decision = decide(rows)
    return {
        "study": name,
        "trials": len(rows),
        "pareto": [trial_json(r) for r in front],
        "best": None if best is None else trial_json(best),
        "decision": None if decision is None else decision.summary(),
        "reference": None if reference is None else trial_json(reference),
    }


def plot_table(data: ParetoPlotData) -> str:
    """The points of the Pareto plot, best throughput first; the pick and the front marked."""
    front = {p.trial for p in data.front}
    pick = data.pick.trial if data.pick is not None else None
    points = [(p, True) for p in data.feasible] + [(p, False) for p in data.infeasible]
    points.sort(key=lambda item: -item[0].throughput)
    table = format_table(
        ["#", "samples/s", drop_header(data.metric), "feasible", "front", "pick"],
        [
            [
                str(p.trial),
                f"{p.throughput:,.0f}",
                f"{p.metric_drop:.3f}",
                "yes" if feasible else "no",
                "yes" if p.trial in front else "",
                "yes" if p.trial == pick else "",
            ]
            for p, feasible in points
        ],
    )
    lines = [data.title, table]
    if data.message is not None:  # nothing measured: the message says why
        lines.append(data.message)
    elif data.unmeasured:
        by_reason = ", ".join(f"{n} {status}" for status, n in data.failures.items())
        lines.append(f"{data.unmeasured} not measured ({by_reason})")
    return "\n".join(lines)


def sensitivity_json(model: str, rule: str, rows: list[Any]) -> dict[str, Any]:
    return {"model": model, "rule": rule, "rows": [r._asdict() for r in rows]}


def sensitivity_table(rows: list[Any]) -> str:
    """The all-bf16 baseline first, then the whole model at each lower math fidelity (where
    the pass emulates it), then each dtype's layers, most sensitive first."""
    whole = [r for r in rows[1:] if r.weight is None]
    layers = [r for r in rows[1:] if r.weight is not None]
    ordered = [rows[0], *whole, *sorted(layers, key=lambda r: (r.dtype, r.score), reverse=True)]

    def label(r: Any) -> str:
        if r.weight:
            return r.weight
        return "(none: all bf16)" if r.fidelity is None else f"(none: all bf16, {r.fidelity})"

    return format_table(
        ["weight", "dtype", "drop", "changed(%)", "pcc", "max|err|", "mean|err|"],
        [
            [
                label(r),
                r.dtype,
                f"{r.metric_drop:.3g}",
                f"{100 * (1 - r.agreement):.2f}",
                f"{r.pcc:.6f}",
                f"{r.max_abs_error:.3g}",
                f"{r.mean_abs_error:.3g}",
            ]
            for r in ordered
        ],
    )
