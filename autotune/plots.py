"""The throughput Pareto front: computed as plain data first, drawn second."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from autotune.analysis import TrialRow, best_feasible, pareto_front


class Point(NamedTuple):
    trial: int
    accuracy_drop: float  # points of top-1 vs fp32
    throughput: float  # samples/s


class ParetoPlotData(NamedTuple):
    title: str
    feasible: list[Point]
    infeasible: list[Point]
    front: list[Point]  # sorted by accuracy drop, the line drawn
    pick: Point | None  # what `autotune export` writes
    pick_throughput: float | None  # median over its pooled measurements (what export reports)
    max_accuracy_drop: float
    unmeasured: int  # pruned / failed trials, counted in the legend


def pareto_plot_data(
    rows: list[TrialRow], *, model: str, backend: str, device: str, max_accuracy_drop: float
) -> ParetoPlotData:
    def point(r: TrialRow) -> Point:
        return Point(r.number, r.accuracy_drop, r.throughput)

    measured = [r for r in rows if r.measured and r.duplicate_of is None]
    best = best_feasible(rows)
    return ParetoPlotData(
        title=f"{model} on {backend} ({device}): {len(rows)} trials",
        feasible=[point(r) for r in measured if r.feasible],
        infeasible=[point(r) for r in measured if not r.feasible],
        front=sorted((point(r) for r in pareto_front(rows)), key=lambda p: p.accuracy_drop),
        pick=point(best) if best else None,
        pick_throughput=best.confirmed_throughput if best else None,
        max_accuracy_drop=max_accuracy_drop,
        unmeasured=sum(1 for r in rows if r.state in ("PRUNED", "FAIL")),
    )


def draw(data: ParetoPlotData, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    if data.feasible:
        ax.scatter(
            *_xy(data.feasible), c="tab:blue", s=28, label=f"feasible ({len(data.feasible)})"
        )
    if data.infeasible:
        ax.scatter(
            *_xy(data.infeasible),
            c="tab:gray",
            marker="x",
            s=28,
            label=f"infeasible ({len(data.infeasible)})",
        )
    if data.front:
        ax.step(
            *_xy(data.front),
            where="post",
            c="tab:orange",
            lw=1.5,
            marker="o",
            ms=9,
            mfc="none",
            label=f"Pareto front ({len(data.front)})",
        )
    if data.pick:
        ax.scatter(
            [data.pick.accuracy_drop],
            [data.pick.throughput],
            marker="*",
            s=320,
            c="gold",
            edgecolors="black",
            zorder=5,
            label=f"exported: trial {data.pick.trial}, {data.pick_throughput:,.0f}/s "
            "(median of its pooled measurements)",
        )
    ax.axvline(
        data.max_accuracy_drop,
        c="tab:red",
        ls="--",
        lw=1,
        label=f"max accuracy drop {data.max_accuracy_drop:g} pt",
    )
    if data.unmeasured:
        ax.plot([], [], " ", label=f"pruned or failed: {data.unmeasured}")
    ax.set_yscale("log")
    ax.set_xlabel("top-1 accuracy drop vs fp32 (percentage points, lower is better)")
    ax.set_ylabel("throughput (samples/s, log scale, higher is better)")
    ax.set_title(data.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(out)
    plt.close(fig)


def _xy(points: list[Point]) -> tuple[list[float], list[float]]:
    return [p.accuracy_drop for p in points], [p.throughput for p in points]
