"""Per-layer sensitivity to Tenstorrent's weight formats, and dtype maps seeded from it.

"Which layers can go to bfp_bf8 or bfp_bf4?" is answered exactly on any CPU: lower one
weight at a time through the emulated card numerics and compare with fp32. The answer is
cached in the study storage (a record study named `<model>-sensitivity`), and studies whose
dtype dimension offers block-float formats queue the maps it suggests before sampling.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from autotune.config import TrialConfig, WorkerJob
from autotune.errors import AutotuneError
from autotune.runner import RunnerSettings, fp32_reference, run_job
from autotune.storage import open_storage

if TYPE_CHECKING:
    from search_spaces import SearchSpace

ATTR = "autotune_sensitivity"
EMULATION_BACKEND = "cpu-emulate-tt"  # exact card numerics; its first weight dtype is bf16
NUMERICS_RULE = "host"
EVAL_BATCH = 500


class Sensitivity(NamedTuple):
    """One weight lowered to one dtype (weight None: the all-bf16 baseline)."""

    weight: str | None
    dtype: str
    accuracy_drop: float
    agreement: float
    pcc: float
    max_abs_error: float
    mean_abs_error: float

    @property
    def score(self) -> tuple[float, float]:
        """Lower is less sensitive: flipped predictions first, then output error."""
        return (1.0 - self.agreement, self.mean_abs_error)


def study_name(model: str) -> str:
    return f"{model}-sensitivity"


def layer_sensitivity(
    model: str,
    storage_url: str,
    runner: RunnerSettings,
    cache_dir: Path,
    eval_limit: int | None = None,
    recompute: bool = False,
) -> list[Sensitivity]:
    """Cached in `storage_url`; computed in one worker process when missing or stale."""
    import optuna

    storage = open_storage(storage_url)
    record = optuna.create_study(study_name=study_name(model), storage=storage, load_if_exists=True)
    cached = record.user_attrs.get(ATTR)
    if cached and cached.get("eval_limit") == eval_limit and not recompute:
        return [Sensitivity(**row) for row in cached["rows"]]

    key = hashlib.sha1(f"{storage_url}|{study_name(model)}".encode()).hexdigest()[:12]
    ref_path = cache_dir / "reference" / f"{study_name(model)}-{key}-{eval_limit or 'all'}.pt"
    ref = fp32_reference(model, eval_limit, ref_path, runner)
    job = WorkerJob(
        TrialConfig(
            model=model, backend=EMULATION_BACKEND, batch_size=EVAL_BATCH, activation_dtype="bf16"
        ),
        mode="sensitivity",
        reference_path=str(ref_path),
        reference_accuracy=ref.metrics.get("accuracy"),
        eval_limit=eval_limit,
    )
    result = run_job(job, runner)
    if not result.ok:
        raise AutotuneError(f"sensitivity run failed ({result.status}): {result.message}")
    rows = [Sensitivity(**{f: row.get(f) for f in Sensitivity._fields}) for row in result.table]
    record.set_user_attr(
        ATTR,
        {
            "eval_limit": eval_limit,
            "rule": NUMERICS_RULE,
            "backend": EMULATION_BACKEND,
            "reference_accuracy": ref.metrics.get("accuracy"),
            "environment": result.environment,
            "rows": [row._asdict() for row in rows],
        },
    )
    return rows


def ranked(rows: list[Sensitivity], dtype: str) -> list[Sensitivity]:
    """Rows for `dtype`, least sensitive first."""
    return sorted((r for r in rows if r.weight and r.dtype == dtype), key=lambda r: r.score)


def seeded_dtype_params(space: SearchSpace, rows: list[Sensitivity]) -> list[dict[str, Any]]:
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
    seeds: list[dict[str, Any]] = [dict(rung)]
    for dtype in dims[0].choices[1:]:
        by_weight = {r.weight: r.score for r in rows if r.weight and r.dtype == dtype}

        def dim_score(dim: Any, by_weight: dict = by_weight) -> tuple[float, float]:
            hits = [s for w, s in by_weight.items() if any(fnmatchcase(w, m) for m in dim.members)]
            return (sum(h[0] for h in hits), sum(h[1] for h in hits))

        order = sorted((d for d in dims if dtype in d.choices), key=dim_score)
        for d in order:
            rung = {**rung, d.name: dtype}
            if rung not in seeds:
                seeds.append(dict(rung))
    return seeds


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
