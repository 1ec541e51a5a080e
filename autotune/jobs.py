"""The jobs the tuner side asks trial processes to run, built in one place for the tuner,
`autotune verify`, the sensitivity command and the benches: a trial's measurement, the fp32
reference, and the per-layer sensitivity pass. Each runs in a process of its own
(`autotune.launch.runner`); what runs there is `autotune.child`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autotune import defaults
from autotune.child.reference import BATCH as REFERENCE_BATCH
from autotune.child.reference import Reference
from autotune.child.sensitivity import EMULATION_BACKEND, EVAL_BATCH
from autotune.errors import AutotuneError
from autotune.launch.runner import RunnerSettings, run_job
from autotune.sensitivity import Sensitivity, study_name
from autotune.wire import JobMode, TrialConfig, TrialJob

if TYPE_CHECKING:
    from autotune.study_options import StudyOptions


def trial_job(opts: StudyOptions, config: TrialConfig, reference: Reference) -> TrialJob:
    """The measurement protocol of a trial (also what `autotune verify` replays)."""
    return TrialJob(
        config,
        measure_seconds=opts.measure_seconds,
        warmup_iters=opts.warmup_iters,
        warmup_seconds=opts.measure_seconds * defaults.WARMUP_SHARE,
        reference_path=str(reference.path),
        reference_accuracy=reference.accuracy,
        eval_limit=opts.eval_limit,
        memory_limit_bytes=opts.memory_limit,
    )


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
        result.metrics.get("accuracy"),
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
