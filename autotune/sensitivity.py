"""Per-layer sensitivity to Tenstorrent's weight formats, and the starting points it orders.

"Which layers can go to bfp_bf8 or bfp_bf4?" is answered exactly on any CPU: lower one
weight at a time through the emulated card numerics and compare with fp32. Studies whose
dtype dimension offers block-float formats queue the maps it suggests before sampling.

This module reads, ranks and draws the rows; the pass itself runs in a trial process
(`autotune.child.sensitivity`, cached there), started by `autotune.jobs.layer_sensitivity`.

The rows have one home: that cache file. The trial process that computes them writes it
(it has no storage: the child never imports optuna), and every storage and study on the
host reuses it, so a new database never pays for the pass again. A storage that is told
of a pass (`autotune sensitivity --storage`, a study's starting points) keeps only where
the file is (study `<model>-sensitivity`, `records.SensitivityRecord.path`), for its
readers, the HTML report: `stored_pass` reads the file through it. A copy in the storage
would be a second home that can disagree with the cache (recomputed with --recompute, or
for a changed model); the price is that a report made where the file is not (another
host, a cleared cache) shows no chart until `autotune sensitivity` runs there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from autotune.child.sensitivity import NUMERICS_RULE, read_cache

if TYPE_CHECKING:
    from autotune.records import SensitivityRecord
    from search_spaces import SearchSpace


class Sensitivity(NamedTuple):
    """One weight lowered to one dtype (weight None: the all-bf16 baseline)."""

    weight: str | None
    dtype: str
    metric_drop: float
    agreement: float | None
    pcc: float
    max_abs_error: float
    mean_abs_error: float
    # The math fidelity of a whole-model row (weight None) where the pass emulates it: the
    # baseline is hifi4, then one row per lower fidelity; None for the per-weight rows.
    fidelity: str | None = None

    @property
    def score(self) -> tuple[float, float]:
        """Lower is less sensitive: flipped predictions first (the metric's drop where the
        output has no classes), then output error."""
        first = 1.0 - self.agreement if self.agreement is not None else self.metric_drop
        return (first, self.mean_abs_error)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Sensitivity:
        """One row as the pass writes it (its extra keys left out)."""
        return cls(**{f: row.get(f) for f in cls._fields})


class StoredPass(NamedTuple):
    rows: list[Sensitivity]
    eval_limit: int | None
    backend: str | None


def stored_pass(record: SensitivityRecord) -> StoredPass | None:
    """The pass a storage's record points to, read from its cache file; None when the file
    is not here. A record written before the storage kept only the pointer holds the rows
    itself."""
    data = record.to_attrs() if record.path is None else read_cache(Path(record.path))
    if data is None:
        return None
    rows = [Sensitivity.of(row) for row in data.get("rows") or []]
    return StoredPass(rows, data.get("eval_limit"), data.get("backend"))


def fidelity_rows(rows: list[Sensitivity]) -> list[Sensitivity]:
    """The whole-model rows per math fidelity (hifi4 first), where the pass has them."""
    return [r for r in rows if r.weight is None and r.fidelity is not None]


def study_name(model: str) -> str:
    return f"{model}-sensitivity"


def ranked(rows: list[Sensitivity], dtype: str) -> list[Sensitivity]:
    """Rows for `dtype`, least sensitive first."""
    return sorted((r for r in rows if r.weight and r.dtype == dtype), key=lambda r: r.score)


def dtype_starting_points(space: SearchSpace, rows: list[Sensitivity]) -> list[dict[str, Any]]:
    """Optuna params for the weight-dtype dimensions, a ladder of increasing compression.

    Start with every dimension at the highest precision; then, for each lower dtype in turn,
    lower the k least sensitive dimensions (k = 1..all) to it, the others staying at the
    previous rung (bfp_bf4 steps start from all-bfp_bf8, not from bf16). The first maps that
    break the accuracy constraint mark the frontier within len(dims) * formats trials.

    A dimension covering several weights (a group) is as sensitive as the sum of its
    members; members are matched to rows by fnmatch, so role globs work."""
    from fnmatch import fnmatchcase

    dims = space.weight_dimensions
    if not dims:
        return []
    rung = {d.name: d.choices[0] for d in dims}
    points: list[dict[str, Any]] = [dict(rung)]
    for dtype in dims[0].choices[1:]:
        by_weight = {r.weight: r.score for r in rows if r.weight and r.dtype == dtype}

        def dim_score(dim: Any, by_weight: dict = by_weight) -> tuple[float, float]:
            hits = [s for w, s in by_weight.items() if any(fnmatchcase(w, m) for m in dim.members)]
            return (sum(h[0] for h in hits), sum(h[1] for h in hits))

        order = sorted((d for d in dims if dtype in d.choices), key=dim_score)
        for d in order:
            rung = {**rung, d.name: dtype}
            if rung not in points:
                points.append(dict(rung))
    return points


class SensitivityPlotData(NamedTuple):
    title: str
    labels: list[str]  # weight names, most sensitive first (of the lowest dtype)
    dtypes: list[str]
    flipped_percent: dict[str, list[float]]  # dtype -> % predictions changed, per label


def plot_data(model: str, rows: list[Sensitivity]) -> SensitivityPlotData:
    dtypes = sorted({r.dtype for r in rows if r.weight}, key=lambda d: -_bits(d))
    lowest = dtypes[-1] if dtypes else ""
    labels = [r.weight for r in reversed(ranked(rows, lowest))]
    table = {(r.weight, r.dtype): r for r in rows}
    flipped = {d: [100 * (1 - table[(w, d)].agreement) for w in labels] for d in dtypes}
    return SensitivityPlotData(
        title=f"{model}: predictions changed when one weight is lowered "
        f"(tt-metal {NUMERICS_RULE} rounding)",
        labels=labels,
        dtypes=dtypes,
        flipped_percent=flipped,
    )


def _bits(dtype: str) -> int:
    return {"bf16": 16, "bfp_bf8": 8, "bfp_bf4": 4}.get(dtype, 0)


def draw(data: SensitivityPlotData, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(data.labels)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.32 * n), layout="constrained")
    height = 0.8 / max(len(data.dtypes), 1)
    for i, dtype in enumerate(data.dtypes):
        ys = [j + i * height for j in range(n)]
        ax.barh(ys, data.flipped_percent[dtype], height=height, label=dtype)
    ax.set_yticks(
        [j + height * (len(data.dtypes) - 1) / 2 for j in range(n)], data.labels, fontsize=8
    )
    ax.invert_yaxis()
    ax.set_xlabel("top-1 predictions changed vs fp32 (%)")
    ax.set_title(data.title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend()
    fig.savefig(out)
    plt.close(fig)
