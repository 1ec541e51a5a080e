"""What a study starts from: its record, its fp32 reference, and its starting points.

- The study's record (`autotune.records.StudyRecord`) is written by the tuner that creates
  the study; every later tuner (a resume, a worker on another host) must run it with the
  same identity options and space (`open_record`).
- The fp32 reference is the first host's (`study_reference`): its accuracy is recorded
  with the study, and other hosts warn when their model differs.
- Starting points are trials queued when a study is created, run before the sampler's own:
  - the backend's reference recipe (`Backend.reference_recipe`) translated to the space:
    measured first, it is the reference the study must beat
    (`autotune.analysis.reference_recipe_row`);
  - dtype maps ordered by layer sensitivity (`autotune.sensitivity`), where the space
    offers block-float formats: the accurate-and-low-precision frontier is found in the
    first trials.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autotune.child.reference import Reference
from autotune.child.reference import cached as cached_reference
from autotune.errors import UsageError
from autotune.jobs import fp32_reference
from autotune.records import (
    FROM_RECIPE,
    FROM_SENSITIVITY,
    StudyRecord,
    enqueue,
    read_study,
    write_study,
)
from autotune.study_options import IDENTITY
from search_spaces import recipe_params

if TYPE_CHECKING:
    from collections.abc import Sequence

    import optuna

    from autotune.backends import Backend
    from autotune.jobs import ModelInfo
    from autotune.launch.runner import RunnerSettings
    from autotune.study_options import StudyOptions
    from search_spaces import SearchSpace
    from studies import Weight


def open_record(
    study: optuna.Study,
    space: SearchSpace,
    backend: Backend,
    opts: StudyOptions,
    runner: RunnerSettings,
    model: ModelInfo,
    metric: dict[str, Any],
) -> StudyRecord:
    """The study's record. A new study gets one, with the metric in force (`metric`, its
    limit included), and its starting points; an existing study must have been started with
    the same identity options, space and metric (its trial budget follows `opts`)."""
    record = read_study(study)
    wanted = {**opts.shared(), "space_signature": space.signature()}
    if record is None:
        record = StudyRecord(
            options=wanted,
            trials_budget=opts.trials,
            weight_groups=_weight_groups(model.weights, space),
            reference_recipe=recipe_config(space, backend),
            metric=metric,
        )
        write_study(study, record)
        queue_starting_points(study, space, backend, opts, runner)
        return record
    for key in (*IDENTITY, "space_signature", "metric"):
        if key == "metric":  # (a study stored before metrics existed may not say)
            stored, asked = record.metric.get("name", metric.get("name")), metric.get("name")
        else:
            stored, asked = record.options.get(key), wanted[key]
        if stored != asked:
            what = "space" if key == "space_signature" else key.replace("_", " ")
            raise UsageError(
                f"study {opts.name!r} exists with a different {what}; "
                f"resume it with its original options or start a new one with --study-name"
            )
    if record.trials_budget != opts.trials:
        record.trials_budget = opts.trials
        write_study(study, record)
    return record


def _weight_groups(weights: Sequence[Weight], space: SearchSpace) -> dict[str, list[str]]:
    """Each weight-dtype dimension's label -> the weight names it sets."""
    from fnmatch import fnmatchcase

    names = [w.name for w in weights]
    return {
        label: [n for n in names if any(fnmatchcase(n, m) for m in members)]
        for label, members in space.weight_groups().items()
    }


def study_reference(
    study: optuna.Study, record: StudyRecord, opts: StudyOptions, runner: RunnerSettings
) -> tuple[Reference, StudyRecord]:
    """fp32 outputs on the eval set (`autotune.child.reference`): one cached file per model,
    weights and eval set on this host, shared by its studies and sensitivity passes. Also
    the study's record, with the reference recorded where it had none."""
    recorded = record.reference_fingerprint
    if recorded:
        hit = cached_reference(opts.cache_dir, opts.model, recorded)
        if hit is not None:
            return replace(hit, metric_value=record.reference_metric), record
    ref = fp32_reference(opts.model, opts.eval_limit, runner, opts.cache_dir)
    if recorded and recorded != ref.fingerprint:
        print(
            f"autotune: warning: model {opts.model!r} here (weights, code or eval "
            "data) differs from the one this study started with; accuracy is measured "
            "against this host's fp32 outputs",
            file=sys.stderr,
            flush=True,
        )
        return ref, record
    record = replace(
        read_study(study) or record,
        reference_metric=ref.metric_value,
        reference_environment=ref.environment,
        reference_fingerprint=ref.fingerprint,
    )
    write_study(study, record)
    return ref, record


def recipe_config(space: SearchSpace, backend: Backend) -> dict[str, Any] | None:
    """The backend's recipe as a config (stored with the study), where the space has it."""
    recipe = recipe_params(space, backend.reference_recipe)
    return recipe[1].to_dict() if recipe is not None else None


def queue_starting_points(
    study: optuna.Study,
    space: SearchSpace,
    backend: Backend,
    opts: StudyOptions,
    runner: RunnerSettings,
) -> None:
    """Queue the study's starting points, the backend's recipe first."""
    recipe = recipe_params(space, backend.reference_recipe)
    if recipe is not None:
        enqueue(study, recipe[0], starting_point=FROM_RECIPE)
    if opts.starting_points:
        for params in sensitivity_points(space, opts, runner):
            enqueue(study, params, starting_point=FROM_SENSITIVITY)


def sensitivity_points(
    space: SearchSpace, opts: StudyOptions, runner: RunnerSettings
) -> list[dict[str, Any]]:
    """Dtype maps ordered by layer sensitivity (only where block-float formats are offered).

    A help, not a requirement: when the pass fails, the study goes on without these
    starting points and says so in one line."""
    from autotune.jobs import layer_sensitivity
    from autotune.sensitivity import dtype_starting_points

    dims = space.weight_dimensions
    if not dims or not any(c.startswith("bfp") for d in dims for c in d.choices):
        return []
    try:
        rows = layer_sensitivity(
            opts.model, runner, opts.cache_dir, opts.eval_limit, storage_url=opts.storage
        )
        return dtype_starting_points(space, rows)
    except Exception as exc:  # any failure costs only the starting points
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(
            f"autotune: {why}; the study goes on without sensitivity-ordered starting points",
            file=sys.stderr,
            flush=True,
        )
        return []
