"""The throughput Pareto front: computed as plain data first, drawn second.

What the picture must say at a glance: which trials meet the accuracy constraint (blue
dots, inside the shaded band) and which do not (grey crosses), the front of trade-offs
(orange steps) and the exported pick (gold star, labelled). Throughput is on a log axis
only when it spans a decade or more; accuracy drops far beyond the constraint (e.g. a
trial whose outputs were NaN, scored as a total loss) are drawn at the right edge as
arrows instead of squeezing every other point against zero.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from autotune import defaults
from autotune.analysis import TrialRow, best_feasible, pareto_front
from autotune.records import drop_label
from studies.metrics import TOP1

if TYPE_CHECKING:
    from autotune.records import StudyRecord

LOG_SCALE_SPAN = 10.0  # max/min throughput from which the y axis is logarithmic
OFF_SCALE_FACTOR = 4.0  # drops beyond this many times the constraint are drawn at the edge


class Point(NamedTuple):
    trial: int
    metric_drop: float  # the study's metric vs fp32, in its unit
    throughput: float  # samples/s


class ParetoPlotData(NamedTuple):
    title: str
    feasible: list[Point]
    infeasible: list[Point]
    front: list[Point]  # sorted by accuracy drop, the line drawn
    pick: Point | None  # what `autotune export` writes
    pick_throughput: float | None  # median over its pooled measurements (what export reports)
    max_metric_drop: float
    unmeasured: int  # pruned / failed trials, counted in the legend
    log_y: bool  # throughputs span LOG_SCALE_SPAN or more
    x_max: float | None  # right edge when some points lie beyond it (drawn at the edge)
    off_scale: list[int]  # trials drawn at the right edge
    failures: dict[str, int]  # unmeasured trials by status, most frequent first
    message: str | None  # one line when there is no point to draw
    min_agreement: float | None  # percent; a second constraint, not on these axes
    metric: dict[str, Any]  # `StudyRecord.metric`: what the drop is a drop of


def _unit(metric: dict[str, Any]) -> str:
    unit = metric.get("unit") or ""
    return "pt" if unit == "points" else unit


def study_labels(meta: StudyRecord) -> tuple[str, str, str]:
    """Model, backend and device of a study, as its plot and report name them."""
    device = meta.reference_environment.get("device", "unknown device")
    return meta.model or "?", meta.backend or "?", device


def study_plot_data(rows: list[TrialRow], meta: StudyRecord) -> ParetoPlotData:
    """The plot of a stored study (`plot` and `report`): its labels and its constraint, the
    default one where the record has none."""
    model, backend, device = study_labels(meta)
    drop = meta.metric_limit
    return pareto_plot_data(
        rows,
        model=model,
        backend=backend,
        device=device,
        max_metric_drop=defaults.MAX_ACCURACY_DROP if drop is None else drop,
        min_agreement=meta.min_agreement,
        metric=meta.metric or None,
    )


def pareto_plot_data(
    rows: list[TrialRow],
    *,
    model: str,
    backend: str,
    device: str,
    max_metric_drop: float,
    min_agreement: float | None = None,
    metric: dict[str, Any] | None = None,
) -> ParetoPlotData:
    def point(r: TrialRow) -> Point:
        return Point(r.number, r.metric_drop, r.throughput)

    measured = [r for r in rows if r.measured and r.duplicate_of is None]
    best = best_feasible(rows)
    failed = [r for r in rows if r.state in ("PRUNED", "FAIL")]
    failures = dict(Counter(r.status for r in failed).most_common())
    throughputs = [r.throughput for r in measured if r.throughput > 0]
    log_y = bool(throughputs) and max(throughputs) >= LOG_SCALE_SPAN * min(throughputs)

    # Keep the constraint's neighbourhood readable: far-off drops go to the edge, unless a
    # feasible point is out there (a loose constraint: then nothing is off scale).
    edge = max(OFF_SCALE_FACTOR * max_metric_drop, 1.0)
    edge = max([edge, *(r.metric_drop for r in measured if r.feasible)])
    off_scale = [r.number for r in measured if r.metric_drop > edge]

    message = None
    if not measured:
        by_reason = ", ".join(f"{n} {status}" for status, n in failures.items())
        message = (
            f"no measured trial to plot: {len(failed)} of {len(rows)} trials failed"
            + (f" ({by_reason})" if by_reason else "")
            if failed
            else f"no measured trial to plot yet ({len(rows)} trials, none finished)"
        )
    return ParetoPlotData(
        title=f"{model} on {backend} ({device}): {len(rows)} trials",
        feasible=[point(r) for r in measured if r.feasible],
        infeasible=[point(r) for r in measured if not r.feasible],
        front=sorted((point(r) for r in pareto_front(rows)), key=lambda p: p.metric_drop),
        pick=point(best) if best else None,
        pick_throughput=best.confirmed_throughput if best else None,
        max_metric_drop=max_metric_drop,
        unmeasured=len(failed),
        log_y=log_y,
        x_max=edge if off_scale else None,
        off_scale=off_scale,
        failures=failures,
        message=message,
        min_agreement=min_agreement,
        metric=metric or TOP1.describe(),
    )


def draw(data: ParetoPlotData, out: Path | BinaryIO, fmt: str | None = None) -> None:
    """Draw to a .png/.svg path, or to a binary file object in `fmt`. With nothing measured
    the figure shows `data.message` instead of axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    try:
        if data.message is not None:
            ax.set_axis_off()
            ax.set_title(data.title)
            ax.text(0.5, 0.5, data.message, ha="center", va="center", wrap=True, fontsize=11)
            fig.savefig(out, format=fmt)
            return
        _draw_points(ax, data)
        ax.set_xlabel(f"{drop_label(data.metric)} (lower is better)")
        ax.set_ylabel(
            "throughput (samples/s" + (", log scale" if data.log_y else "") + "; higher is better)"
        )
        if data.log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.08)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_title(data.title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.savefig(out, format=fmt)
    finally:
        plt.close(fig)


def render(data: ParetoPlotData, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    draw(data, buf, fmt)
    return buf.getvalue()


def _draw_points(ax: object, data: ParetoPlotData) -> None:
    off = set(data.off_scale)

    def xy(points: list[Point], beyond: bool = False) -> tuple[list[float], list[float]]:
        chosen = [p for p in points if (p.trial in off) == beyond]
        x = [data.x_max if beyond else p.metric_drop for p in chosen]
        return x, [p.throughput for p in chosen]

    all_drops = [p.metric_drop for p in data.feasible + data.infeasible if p.trial not in off]
    left = min([0.0, *all_drops])
    ax.axvspan(
        left - 1.0,
        data.max_metric_drop,
        color="tab:green",
        alpha=0.07,
        lw=0,
        label=f"feasible: drop <= {data.max_metric_drop:g} {_unit(data.metric)}"
        # Agreement is not on these axes: a grey cross inside the band failed it.
        + ("" if data.min_agreement is None else f"\nand agreement >= {data.min_agreement:g}%"),
    )
    ax.axvline(data.max_metric_drop, c="tab:red", ls="--", lw=1)
    if data.feasible:
        ax.scatter(
            *xy(data.feasible),
            c="tab:blue",
            s=30,
            zorder=3,
            label=f"feasible ({len(data.feasible)})",
        )
    if data.infeasible:
        ax.scatter(
            *xy(data.infeasible),
            c="tab:gray",
            marker="x",
            s=30,
            zorder=3,
            label=f"infeasible ({len(data.infeasible)})",
        )
    if off:
        x, y = xy(data.feasible + data.infeasible, beyond=True)
        ax.scatter(
            x,
            y,
            c="tab:gray",
            marker=">",
            s=40,
            zorder=3,
            label=f"off scale, drop > {data.x_max:g} pt ({len(off)})",
        )
    if data.front:
        fx = [
            min(p.metric_drop, data.x_max) if data.x_max else p.metric_drop for p in data.front
        ]
        ax.step(
            fx,
            [p.throughput for p in data.front],
            where="post",
            c="tab:orange",
            lw=1.5,
            marker="o",
            ms=9,
            mfc="none",
            zorder=2,
            label=f"Pareto front ({len(data.front)})",
        )
    if data.pick:
        ax.scatter(
            [data.pick.metric_drop],
            [data.pick.throughput],
            marker="*",
            s=340,
            c="gold",
            edgecolors="black",
            zorder=5,
            label=f"exported: trial {data.pick.trial}",
        )
        ax.annotate(
            f"trial {data.pick.trial}: {data.pick_throughput:,.0f}/s\n"
            "(median of its pooled measurements)",
            (data.pick.metric_drop, data.pick.throughput),
            xytext=(12, -18),
            textcoords="offset points",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "lightyellow", "alpha": 0.9},
        )
    else:
        ax.text(
            0.02,
            0.97,
            f"no feasible trial: none within {data.max_metric_drop:g} {_unit(data.metric)} "
            "of fp32",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            color="tab:red",
        )
    if data.unmeasured:
        reasons = ", ".join(f"{status} {n}" for status, n in data.failures.items())
        ax.plot([], [], " ", label=f"not measured: {data.unmeasured} ({reasons})")
    right = data.x_max * 1.04 if data.x_max else None
    ax.set_xlim(left=left - 0.05 * max(data.max_metric_drop, 0.1), right=right)
