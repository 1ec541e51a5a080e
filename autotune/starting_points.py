"""Starting points: trials queued when a study is created, run before the sampler's own.

- The backend's reference recipe (`Backend.reference_recipe`) translated to the space:
  measured first, it is the reference the study must beat
  (`autotune.analysis.reference_recipe_row`).
- Dtype maps ordered by layer sensitivity (`autotune.sensitivity`), where the space offers
  block-float formats: the accurate-and-low-precision frontier is found in the first trials.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from autotune.records import FROM_RECIPE, FROM_SENSITIVITY, enqueue
from search_spaces import recipe_params

if TYPE_CHECKING:
    import optuna

    from autotune.backends import Backend
    from autotune.launch.runner import RunnerSettings
    from autotune.study_options import StudyOptions
    from search_spaces import SearchSpace


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
