"""The Python API: `tune` runs a study as `autotune study` does, in the same isolated trial
processes, and returns the pick with the study.

    import autotune
    result = autotune.tune(model="my_model.py:STUDY", trials=30, max_metric_drop=0.01)
    print(result.pick.config, result.pick.confirmed_throughput)
    result.export("best.json")

Trial processes rebuild the model by importing it, so `model` is where it lives: a
registered name, ``path/to/file.py:ATTR`` or ``package.module:ATTR``, or the object
itself when it is defined at the top level of a file or module (a `studies.Study`, a Study
subclass, or a factory function returning ``(model, inputs[, labels])``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.errors import UsageError

if TYPE_CHECKING:
    import optuna

    from autotune.analysis import TrialRow


@dataclass(frozen=True)
class TuneResult:
    """A finished study: its best feasible config (re-measured; None when nothing met the
    constraints) and the Optuna study, for everything else."""

    study: optuna.Study
    pick: TrialRow | None

    def export(self, path: str | Path) -> Path:
        """Write the pick as `autotune export` does (the JSON `autotune.apply_config` reads)."""
        from autotune.export import export_dict, render, save

        out = Path(path)
        save(render(export_dict(self.study), "json"), out, "json")
        return out


def tune(model: Any, *, trials: int = 50, progress: bool = False, **options: Any) -> TuneResult:
    """Run (or resume) a study of `model` and return its pick. `options` are the study's
    options, named as `autotune study`'s flags are (``max_accuracy_drop=0.5``,
    ``storage="sqlite:///autotune.db"``, ``backend="cpu"`` ...). Bad input raises
    `autotune.errors.UsageError` before any trial runs."""
    from autotune.analysis import best_feasible, trial_rows
    from autotune.study_options import StudyOptions
    from autotune.tuner import Tuner

    known = {f.name for f in fields(StudyOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"unknown option(s) {', '.join(unknown)}; options: {', '.join(sorted(known))}"
        )
    opts = StudyOptions(model=model_spec(model), trials=trials, progress=progress, **options)
    tuner = Tuner(opts)
    tuner.run()
    return TuneResult(tuner.study, best_feasible(trial_rows(tuner.study)))


def model_spec(model: Any) -> str:
    """The name trial processes load `model` by (see the module docstring)."""
    if isinstance(model, str):
        return model
    if isinstance(model, Path):
        raise UsageError(f"model {str(model)!r}: name the attribute too, as FILE.py:ATTR")
    owner = getattr(model, "__module__", None) or type(model).__module__
    module = sys.modules.get(owner)
    name = _top_level_name(module, model)
    if module is None or name is None:
        raise UsageError(
            f"model {model!r} is not defined at the top level of a file or module: trial "
            "processes rebuild it by importing it (give it a top-level name, or pass "
            "'path/to/file.py:ATTR')"
        )
    file = getattr(module, "__file__", None)
    if owner == "__main__" or owner.startswith("autotune_user_"):
        if not file:
            raise UsageError(f"model {model!r} lives in an interactive session, not a file")
        return f"{Path(file).resolve()}:{name}"
    return f"{owner}:{name}"


def _top_level_name(module: Any, obj: Any) -> str | None:
    if module is None:
        return None
    qualname = getattr(obj, "__qualname__", "")
    if qualname and "." not in qualname and getattr(module, qualname, None) is obj:
        return qualname
    return next((k for k, v in vars(module).items() if v is obj and not k.startswith("_")), None)
