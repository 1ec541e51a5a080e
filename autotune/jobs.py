"""The jobs the tuner side asks trial processes to run, built in one place for the tuner,
`autotune verify`, the sensitivity command and the benches: the model's description (its
first fp32 pass), a trial's measurement, the fp32 reference, and the per-layer sensitivity
pass. Each runs in a process of its own
(`autotune.launch.runner`); what runs there is `autotune.child`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import defaults
from autotune.child.reference import BATCH as REFERENCE_BATCH
from autotune.child.reference import Reference
from autotune.child.sensitivity import EMULATION_BACKEND, EVAL_BATCH
from autotune.errors import AutotuneError, UsageError
from autotune.launch.runner import RunnerSettings, run_job
from autotune.measure import min_iterations
from autotune.sensitivity import Sensitivity, study_name
from autotune.wire import JobMode, TrialConfig, TrialJob
from studies import Weight

if TYPE_CHECKING:
    from autotune.study_options import StudyOptions


@dataclass(frozen=True)
class ModelInfo:
    """What one fp32 pass showed of a model (`autotune.child.describe`)."""

    weights: tuple[Weight, ...]
    inputs: str  # e.g. "input_ids: int64[2, 16], attention_mask: int64[2, 16]"
    output: str
    scored: str
    eval_rows: int
    labels: bool
    metric: dict[str, Any]  # studies.metrics.Metric.describe()
    decoded: str = ""  # the fp32 output in words, where the study can tell (Study.decode)

    def summary(self) -> str:
        return (
            f"inputs {self.inputs}; scored {self.scored}; {self.eval_rows} eval rows"
            f"{'' if self.labels else ' without labels'}; {len(self.weights)} lowerable weights; "
            f"metric {self.metric.get('name')}"
            + (f"; decoded: {self.decoded}" if self.decoded else "")
        )


def describe_model(model: str, settings: RunnerSettings, eval_limit: int | None) -> ModelInfo:
    """Run `model` once in fp32 on its own inputs, in a trial process. A model that cannot
    is bad input: UsageError, one line naming the model and the error."""
    job = TrialJob(
        TrialConfig(model=model, backend="cpu", batch_size=2),
        mode=JobMode.DESCRIBE,
        eval_limit=eval_limit,
    )
    result = run_job(job, settings)
    if not result.ok:
        last = (result.stderr_tail.strip().splitlines() or [""])[-1]
        raise UsageError(
            f"model {model!r} cannot run on its own inputs ({result.status}): "
            f"{result.message or last}"
        )
    art = result.artifacts
    return ModelInfo(
        weights=tuple(Weight(row["name"], row["kind"]) for row in result.table),
        inputs=art["inputs"],
        output=art["output"],
        scored=art["scored"],
        eval_rows=int(art["eval_rows"]),
        labels=art["labels"] == "true",
        metric=json.loads(art["metric"]),
        decoded=art.get("decoded", ""),
    )


def trial_job(opts: StudyOptions, config: TrialConfig, reference: Reference) -> TrialJob:
    """The measurement protocol of a trial (also what `autotune verify` replays)."""
    return TrialJob(
        config,
        measure_seconds=opts.measure_seconds,
        warmup_iters=opts.warmup_iters,
        warmup_seconds=opts.measure_seconds * defaults.WARMUP_SHARE,
        reference_path=str(reference.path),
        reference_metric=reference.metric_value,
        eval_limit=opts.eval_limit,
        memory_limit_bytes=opts.memory_limit,
        latency_percentile=opts.latency_percentile,
        latency_budget_ms=opts.max_latency_ms,
        min_iterations=min_iterations(opts.latency_percentile) if latency_matters(opts) else 0,
    )


def latency_matters(opts: StudyOptions) -> bool:
    """Whether the study constrains or minimizes a latency percentile: its trials then time
    enough iterations for it (`autotune.measure.min_iterations`)."""
    return opts.max_latency_ms is not None or opts.objective == "latency"


def fp32_reference(
    model: str, eval_limit: int | None, settings: RunnerSettings, cache_dir: Path
) -> Reference:
    """The reference for `model` in `cache_dir`, computed there first when missing.

    Raises AutotuneError with one line when the model cannot even run in fp32."""
    job = TrialJob(
        TrialConfig(model=model, backend="cpu", batch_size=REFERENCE_BATCH),
        mode=JobMode.REFERENCE,
        eval_limit=eval_limit,
        cache_dir=str(cache_dir),
    )
    result = run_job(job, settings)
    if not result.ok:
        last = (result.stderr_tail.strip().splitlines() or [""])[-1]
        raise AutotuneError(
            f"the fp32 reference run failed ({result.status}): {result.message or last}"
        )
    return Reference(
        Path(result.artifacts["reference"]),
        result.metrics.get("metric_value"),
        result.artifacts["fingerprint"],
        result.environment,
    )


def layer_sensitivity(
    model: str,
    runner: RunnerSettings,
    cache_dir: Path,
    eval_limit: int | None = None,
    recompute: bool = False,
    storage_url: str | None = None,
) -> list[Sensitivity]:
    """Rows for `model`, from the cache in `cache_dir` or computed in one trial process.

    `storage_url`: also record there where they are (study `<model>-sensitivity`: the
    cache file is their one home, see `autotune.sensitivity`), for its readers.
    Raises AutotuneError (one line) when the pass fails."""
    job = TrialJob(
        TrialConfig(
            model=model, backend=EMULATION_BACKEND, batch_size=EVAL_BATCH, activation_dtype="bf16"
        ),
        mode=JobMode.SENSITIVITY,
        eval_limit=eval_limit,
        cache_dir=str(cache_dir),
        refresh_cache=recompute,
    )
    result = run_job(job, runner)
    if not result.ok:
        raise AutotuneError(f"sensitivity run failed ({result.status}): {result.message}")
    if storage_url is not None:
        # Absolute: the storage's readers may run elsewhere on this host.
        _record(storage_url, model, str(Path(result.artifacts["sensitivity"]).resolve()))
    return [Sensitivity.of(row) for row in result.table]


def _record(storage_url: str, model: str, path: str) -> None:
    import optuna

    from autotune.records import SensitivityRecord, write_sensitivity
    from autotune.storage import open_storage

    record = optuna.create_study(
        study_name=study_name(model), storage=open_storage(storage_url), load_if_exists=True
    )
    write_sensitivity(record, SensitivityRecord(path=path))
