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


class ServePoint(NamedTuple):
    """A measured trial as a server sees it: batch, throughput and latency per batch."""

    trial: int
    family: str  # the config without its batch size: level, dtype, layout, ...
    batch_size: int
    throughput: float
    latency_ms: float | None  # the study's latency percentile
    feasible: bool


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
    serving: tuple[ServePoint, ...] = ()  # every measured trial: the batch and latency views
    latency_label: str = "p95"  # the study's percentile
    max_latency_ms: float | None = None  # the budget, marked on the latency view
    separates: bool = True  # whether the accuracy axis tells the feasible configs apart


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
    data = pareto_plot_data(
        rows,
        model=model,
        backend=backend,
        device=device,
        max_metric_drop=defaults.MAX_ACCURACY_DROP if drop is None else drop,
        min_agreement=meta.min_agreement,
        metric=meta.metric or None,
    )
    return data._replace(max_latency_ms=meta.objective.max_latency_ms)


# Feasible drops closer than this share of the constraint do not separate configs.
SEPARATES = 0.05


def _serving(rows: list[TrialRow]) -> list[ServePoint]:
    from autotune.tables import config_label

    out = []
    for r in rows:
        if not (r.measured and r.duplicate_of is None and r.config):
            continue
        label = config_label(r.config).split(" ", 1)
        out.append(
            ServePoint(
                r.number,
                label[1] if len(label) > 1 else "",
                int(r.config.get("batch_size", 1)),
                r.confirmed_throughput or r.throughput,
                r.metrics.get(r.objective.latency_key),
                r.feasible,
            )
        )
    return out


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
        return Point(r.number, r.metric_drop, r.confirmed_throughput)

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
        serving=tuple(_serving(rows)),
        latency_label=rows[0].objective.latency_key.removeprefix("latency_ms_") if rows else "p95",
        separates=_separates(measured, max_metric_drop),
    )


def _separates(measured: list[TrialRow], limit: float) -> bool:
    """Whether the accuracy axis says something: infeasible trials lie beyond the limit,
    fewer than two feasible ones leave nothing to compare, or their drops differ."""
    drops = [r.metric_drop for r in measured if r.feasible]
    if len(drops) < 2 or len(drops) < len(measured):
        return True
    return max(drops) - min(drops) > SEPARATES * max(limit, 1e-9)


def draw(data: ParetoPlotData, out: Path | BinaryIO, fmt: str | None = None) -> None:
    """Draw to a .png/.svg path, or to a binary file object in `fmt`. With nothing measured
    the figure shows `data.message` instead of axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    # When the accuracy axis does not tell the feasible configs apart (on a CPU every fp32
    # and bf16 config may drop 0.000), what does is drawn instead: throughput against
    # batch size per config family, and latency against throughput with the budget.
    views = ["pareto"] if data.separates or data.message is not None else []
    if data.message is None:
        views += ["batch", "latency"]
    fig, axes = plt.subplots(
        1, len(views), figsize=(7.5 * len(views), 5.5), layout="constrained", squeeze=False
    )
    try:
        ax = axes[0][0]
        if data.message is not None:
            ax.set_axis_off()
            ax.set_title(data.title)
            ax.text(0.5, 0.5, data.message, ha="center", va="center", wrap=True, fontsize=11)
            fig.savefig(out, format=fmt)
            return
        if "pareto" not in views:
            fig.suptitle(
                f"{data.title}: every feasible config has the same {drop_label(data.metric)} "
                "within 5% of the constraint, so throughput, batch size and latency decide",
                fontsize=10,
            )
            _draw_batch_view(axes[0][0], data)
            _draw_latency_view(axes[0][1], data)
            fig.savefig(out, format=fmt)
            return
        _draw_batch_view(axes[0][1], data)
        _draw_latency_view(axes[0][2], data)
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


def _draw_batch_view(ax: Any, data: ParetoPlotData) -> None:
    """Throughput against batch size, one line per config family, the pick starred."""
    families: dict[str, list[ServePoint]] = {}
    for p in sorted(data.serving, key=lambda p: p.batch_size):
        families.setdefault(p.family, []).append(p)
    # The families holding the best throughputs get their own line; the rest share grey.
    ranked = sorted(families, key=lambda f: -max(p.throughput for p in families[f]))
    for i, family in enumerate(ranked):
        points = families[family]
        named = i < 8
        ax.plot(
            [p.batch_size for p in points],
            [p.throughput for p in points],
            marker="o",
            ms=5,
            lw=1.5 if named else 0.8,
            c=None if named else "lightgray",
            label=(family or "(base)") if named else None,
        )
        bad = [p for p in points if not p.feasible]
        if bad:
            ax.scatter(
                [p.batch_size for p in bad],
                [p.throughput for p in bad],
                marker="x",
                c="tab:gray",
                s=40,
                zorder=4,
            )
    _star(ax, data, lambda p: (p.batch_size, p.throughput))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (samples/s; higher is better)")
    ax.set_title("throughput by batch size, per config family (x: infeasible)")
    ax.grid(True, which="both", alpha=0.3)
    if len(ranked) > 8:
        ax.plot([], [], c="lightgray", label=f"{len(ranked) - 8} more families")
    ax.legend(loc="best", fontsize=7)


def _draw_latency_view(ax: Any, data: ParetoPlotData) -> None:
    """Latency per batch against throughput, the budget marked, the pick starred."""
    timed = [p for p in data.serving if p.latency_ms is not None]
    for feasible, style in ((True, {"c": "tab:blue"}), (False, {"c": "tab:gray", "marker": "x"})):
        chosen = [p for p in timed if p.feasible == feasible]
        if chosen:
            ax.scatter(
                [p.throughput for p in chosen],
                [p.latency_ms for p in chosen],
                s=30,
                zorder=3,
                label=f"{'feasible' if feasible else 'infeasible'} ({len(chosen)})",
                **style,
            )
    if data.max_latency_ms is not None:
        ax.axhline(
            data.max_latency_ms,
            c="tab:red",
            ls="--",
            lw=1,
            label=f"budget: {data.latency_label} <= {data.max_latency_ms:g} ms",
        )
    _star(ax, data, lambda p: (p.throughput, p.latency_ms))
    ax.set_yscale("log")
    ax.set_xlabel("throughput (samples/s; higher is better)")
    ax.set_ylabel(f"latency per batch, {data.latency_label} (ms, log scale; lower is better)")
    ax.set_title("latency against throughput")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def _star(ax: Any, data: ParetoPlotData, where: Any) -> None:
    if data.pick is None:
        return
    pick = next((p for p in data.serving if p.trial == data.pick.trial), None)
    if pick is None or None in where(pick):
        return
    x, y = where(pick)
    mark_pick(ax, x, y, pick.trial, f"trial {pick.trial}: bs{pick.batch_size} {pick.family}")


def mark_pick(
    ax: Any,
    x: float,
    y: float,
    trial: int,
    note: str,
    size: int = 300,
    offset: tuple[int, int] = (10, 10),
) -> None:
    """The exported pick: a gold star, labelled, on any of the views."""
    ax.scatter(
        [x],
        [y],
        marker="*",
        s=size,
        c="gold",
        edgecolors="black",
        zorder=5,
        label=f"exported: trial {trial}",
    )
    ax.annotate(
        note,
        (x, y),
        xytext=offset,
        textcoords="offset points",
        fontsize=8,
        bbox={"boxstyle": "round", "fc": "lightyellow", "alpha": 0.9},
    )


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
        fx = [min(p.metric_drop, data.x_max) if data.x_max else p.metric_drop for p in data.front]
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
        mark_pick(
            ax,
            data.pick.metric_drop,
            data.pick.throughput,
            data.pick.trial,
            f"trial {data.pick.trial}: {data.pick_throughput:,.0f}/s\n"
            "(median of its pooled measurements)",
            size=340,
            offset=(12, -18),
        )
    else:
        ax.text(
            0.02,
            0.97,
            f"no feasible trial: none within {data.max_metric_drop:g} {_unit(data.metric)} of fp32",
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
