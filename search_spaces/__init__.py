"""What can be searched: named, documented dimensions and the default space per backend.

A `SearchSpace` turns Optuna suggestions into a `TrialConfig`. Spaces can be narrowed by a
TOML or YAML file (`--space FILE`), never widened past what the backend offers:

    batch_size = {min = 16, max = 1024}     # or: batch_size = [64, 128, 256]
    optimization_level = [1, 2]
    activation_dtype = ["bf16"]
    channels_last = [true]
    [weight_dtypes]                           # glob over weight names -> allowed dtypes
    "fc*.weight" = ["bf16"]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.errors import UsageError
from autotune.wire import TrialConfig

if TYPE_CHECKING:
    import optuna

    from autotune.backends import Backend
    from studies import Study, Weight

__all__ = [
    "ACTIVATION_DTYPE",
    "BATCH_SIZE",
    "KNOB_PREFIX",
    "LOG2_BATCH_SIZE",
    "OPTIMIZATION_LEVEL",
    "TRACE",
    "WEIGHT_PREFIX",
    "BatchSize",
    "Dimension",
    "SearchSpace",
    "SpaceError",
    "default_space",
    "load_space_file",
    "recipe_params",
]

# Names of the common dimensions (each also the TrialConfig field it sets), read by the
# sampler: one spelling for both.
BATCH_SIZE = "batch_size"
LOG2_BATCH_SIZE = "log2_batch_size"  # batch size's Optuna param: searched as log2
OPTIMIZATION_LEVEL = "optimization_level"
TRACE = "trace"
ACTIVATION_DTYPE = "activation_dtype"
WEIGHT_PREFIX = "dtype:"  # + label: a weight-dtype dimension
KNOB_PREFIX = "knob:"  # + name: a backend knob's target


class SpaceError(UsageError):
    pass


@dataclass(frozen=True)
class Dimension:
    """One searched dimension: an Optuna categorical over `choices`.

    `target` names where the value goes in the TrialConfig: a field name, "knob:<name>"
    for a backend knob, or "dtype:<label>" for a weight dtype; then `members` are the weight
    names or globs that take the value (one layer, or a group of layers).
    """

    name: str
    target: str
    choices: tuple[Any, ...]
    doc: str
    members: tuple[str, ...] = ()
    #: choices a space file may add (never offered by default), and why they are risky
    opt_in: tuple[Any, ...] = ()
    opt_in_warning: str = ""
    #: the boolean dimension without which this one changes nothing (`Knob.only_with`)
    only_with: str | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_categorical(self.name, self.choices)

    def narrow(self, allowed: Any) -> Dimension:
        if not isinstance(allowed, list) or not allowed:
            raise SpaceError(f"space file: {self.name} must be a non-empty list of choices")
        offered = (*self.choices, *self.opt_in)
        unknown = [c for c in allowed if c not in offered]
        if unknown:
            raise SpaceError(
                f"space file: {self.name} has no choice {_show(unknown[0])} "
                f"(offered: {', '.join(map(_show, offered))})"
            )
        return replace(self, choices=tuple(c for c in offered if c in allowed))

    def warning(self) -> str | None:
        """One line when the dimension offers an opt-in choice (a space file asked for it)."""
        chosen = [c for c in self.opt_in if c in self.choices]
        if not chosen:
            return None
        return f"space offers {self.name} = {', '.join(map(_show, chosen))}: {self.opt_in_warning}"


@dataclass(frozen=True)
class BatchSize(Dimension):
    """Batch size: powers of two, searched as an ordered integer (log2) so the sampler
    learns that 256 lies between 128 and 512."""

    def suggest(self, trial: optuna.Trial) -> int:
        lo, hi = int(math.log2(self.choices[0])), int(math.log2(self.choices[-1]))
        return 2 ** trial.suggest_int(LOG2_BATCH_SIZE, lo, hi)

    def narrow(self, allowed: Any) -> Dimension:
        if isinstance(allowed, dict):
            unknown = set(allowed) - {"min", "max"}
            if unknown:
                raise SpaceError(f"space file: batch_size takes min and max, not {unknown.pop()}")
            lo, hi = allowed.get("min", self.choices[0]), allowed.get("max", self.choices[-1])
            for bound in (lo, hi):
                if isinstance(bound, bool) or not isinstance(bound, int):
                    raise SpaceError(
                        f"space file: batch_size min and max are integers, not {_show(bound)}"
                    )
            allowed = [b for b in self.choices if lo <= b <= hi]
            if not allowed:
                raise SpaceError(f"space file: no power-of-two batch size in [{lo}, {hi}]")
        narrowed = Dimension.narrow(self, allowed)
        exps = [int(math.log2(b)) for b in narrowed.choices]
        if exps != list(range(exps[0], exps[-1] + 1)):
            raise SpaceError("space file: batch sizes must be consecutive powers of two")
        return narrowed


@dataclass(frozen=True)
class SearchSpace:
    model: str
    backend: str
    dimensions: tuple[Dimension, ...]

    def suggest(self, trial: optuna.Trial) -> TrialConfig:
        return self.config_from({d.name: d.suggest(trial) for d in self.dimensions})

    def config_from(self, values: dict[str, Any]) -> TrialConfig:
        """The config for one value per dimension (keyed by dimension name)."""
        fields: dict[str, Any] = {}
        weights: dict[str, str] = {}
        knobs: dict[str, Any] = {}
        for d in self.dimensions:
            value = values[d.name]
            if d.only_with is not None and not values.get(d.only_with):
                continue  # changes nothing here: the config does not name it
            if d.members:
                weights.update(dict.fromkeys(d.members, value))
            elif d.target.startswith(KNOB_PREFIX):
                knobs[d.target[len(KNOB_PREFIX) :]] = value
            else:
                fields[d.target] = value
        return TrialConfig(
            model=self.model,
            backend=self.backend,
            weight_dtypes=tuple(weights.items()),
            knobs=tuple(knobs.items()),
            **fields,
        )

    @property
    def weight_dimensions(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.members)

    def weight_groups(self) -> dict[str, list[str]]:
        """Dimension label -> the weight names/globs it sets (recorded in exports)."""
        return {d.target[len(WEIGHT_PREFIX) :]: list(d.members) for d in self.weight_dimensions}

    def signature(self) -> str:
        """Identifies the space: a stored study can only be resumed with the same one."""
        return json.dumps([[d.name, list(d.choices)] for d in self.dimensions])

    def warnings(self) -> list[str]:
        """Lines to show before a study: the risky choices a space file opted into."""
        return [w for d in self.dimensions if (w := d.warning()) is not None]

    def size(self) -> int:
        return math.prod(len(d.choices) for d in self.dimensions)

    def narrowed(self, spec: dict[str, Any]) -> SearchSpace:
        by_name = {d.name: d for d in self.dimensions}
        spec = dict(spec)
        weight_spec = spec.pop("weight_dtypes", {})
        if not isinstance(weight_spec, dict):
            raise SpaceError("space file: weight_dtypes must be a table of glob = [dtypes]")
        for name in spec:
            if name not in by_name:
                raise SpaceError(
                    f"space file: unknown dimension {name!r} for backend {self.backend} "
                    f"(dimensions: {', '.join(n for n in by_name if ':' not in n)}, weight_dtypes)"
                )
        dims = {name: by_name[name].narrow(allowed) for name, allowed in spec.items()}
        for glob, allowed in weight_spec.items():
            if not isinstance(glob, str):
                raise SpaceError(f"space file: weight_dtypes keys are globs, not {_show(glob)}")
            matched = [
                d for d in self.weight_dimensions if any(fnmatchcase(m, glob) for m in d.members)
            ]
            if not matched:
                names = ", ".join(m for d in self.weight_dimensions for m in d.members)
                raise SpaceError(f"space file: glob {glob!r} matches no tunable weight ({names})")
            for d in matched:
                dims[d.name] = dims.get(d.name, d).narrow(allowed)
        return replace(self, dimensions=tuple(dims.get(d.name, d) for d in self.dimensions))


#: Where an autotune export (`autotune export`, JSON) keeps the space a card study should
#: search after an emulated study's math-fidelity verdict (`autotune.fidelity_verdict`).
EXPORT_CARD_SPACE = ("math_fidelity", "card_space")


def load_space_file(path: Path) -> dict[str, Any]:
    """A narrowing spec from a TOML or YAML file of ``dimension = choices``, or from an
    autotune export (``.json``) of an emulated study: its math-fidelity verdict's
    ``card_space``, the fidelities not ruled out, so a card study spends no trial on them."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpaceError(f"cannot read space file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpaceError(f"space file {path} is not UTF-8 text") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            return _export_card_space(path, json.loads(text))
        else:
            raise SpaceError(
                f"space file {path}: use a .toml, .yaml or .yml file, or an export's .json"
            )
    except SpaceError:
        raise
    except Exception as exc:  # tomllib/yaml errors: report, don't trace
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpaceError(f"space file {path} is malformed: {first}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"space file {path} must be a table of dimension = choices")
    return data


def _export_card_space(path: Path, data: Any) -> dict[str, Any]:
    verdict = data.get(EXPORT_CARD_SPACE[0]) if isinstance(data, dict) else None
    spec = verdict.get(EXPORT_CARD_SPACE[1]) if isinstance(verdict, dict) else None
    if not isinstance(data, dict) or "schema" not in data:
        raise SpaceError(f"space file {path}: a .json space is an autotune export")
    if not isinstance(spec, dict) or not spec:
        raise SpaceError(
            f"space file {path}: this export holds no math-fidelity verdict (its study's "
            "trials named no math_fidelity)"
        )
    return spec


def default_space(
    study: Study,
    backend: Backend,
    max_batch_size: int | None = None,
    model: str | None = None,
    weights: Sequence[Weight] | None = None,
) -> SearchSpace:
    """Everything the backend offers for this study (`model`: the name the trial process resolves,
    when it differs from the study's own, e.g. ``pkg.module:ATTR``; `weights`: the model's
    lowerable weights as a describe job found them, else the study's own list)."""
    top = max_batch_size or study.max_batch_size
    if top < 1 or top & (top - 1):
        raise SpaceError(f"max batch size must be a power of two, not {top}")
    dims: list[Dimension] = [
        BatchSize(
            BATCH_SIZE,
            BATCH_SIZE,
            tuple(2**i for i in range(top.bit_length())),
            "samples per inference call; larger amortises dispatch, may run out of memory",
        ),
        Dimension(
            OPTIMIZATION_LEVEL,
            OPTIMIZATION_LEVEL,
            (0, 1, 2),
            "compiler optimisation level; see the backend's mapping",
        ),
    ]
    if backend.has_trace:
        dims.append(
            Dimension(
                TRACE, TRACE, (False, True), "record the dispatch sequence once and replay it"
            )
        )
    dims.append(
        Dimension(
            ACTIVATION_DTYPE,
            ACTIVATION_DTYPE,
            backend.activation_dtypes,
            "dtype of activations and of layers the weight map leaves alone",
        )
    )
    dims += [
        Dimension(
            k.name,
            KNOB_PREFIX + k.name,
            k.choices,
            k.doc,
            opt_in=k.opt_in,
            opt_in_warning=k.opt_in_warning,
            only_with=k.only_with if any(d.name == k.only_with for d in dims) else None,
        )
        for k in backend.knobs
    ]
    if weights is None:
        if study.weights is None:
            raise SpaceError(f"study {study.name!r} lists no weights: describe the model first")
        weights = study.weights
    names = [w.name for w in weights if w.kind in backend.weight_kinds]
    dims += [
        Dimension(
            WEIGHT_PREFIX + label,
            WEIGHT_PREFIX + label,
            backend.weight_dtypes,
            f"dtype of {label}" + (f" ({len(members)} weights)" if len(members) > 1 else ""),
            members,
        )
        for label, members in group_weights(names, by_role=study.group_by_role)
    ]
    return SearchSpace(model or study.name, backend.name, tuple(dims))


MAX_WEIGHT_PARAMS = 16


def group_weights(names: list[str], by_role: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """(label, members) per weight-dtype dimension, at most MAX_WEIGHT_PARAMS of them.

    Few weights: one dimension each. Many (a deep model), or `by_role`: one per role, i.e.
    the name with block indices replaced by `*` (`blocks.*.attn.q_proj.weight`), a glob
    tt-xla's overrides accept as is. Still too many: runs of consecutive roles share a
    dimension.
    """
    if len(names) <= MAX_WEIGHT_PARAMS and not by_role:
        return [(n, (n,)) for n in names]
    roles: dict[str, None] = {}
    for n in names:
        roles[".".join("*" if part.isdigit() else part for part in n.split("."))] = None
    globs = list(roles)
    if len(globs) <= MAX_WEIGHT_PARAMS:
        return [(g, (g,)) for g in globs]
    size = math.ceil(len(globs) / MAX_WEIGHT_PARAMS)
    chunks = [tuple(globs[i : i + size]) for i in range(0, len(globs), size)]
    return [(f"group{i}", chunk) for i, chunk in enumerate(chunks)]


def _show(value: Any) -> str:
    return json.dumps(value, default=str)  # YAML may hold dates and the like


def recipe_params(
    space: SearchSpace, recipe: Mapping[str, Any] | None
) -> tuple[dict[str, Any], TrialConfig] | None:
    """A backend's seed recipe (`Backend.seed_recipe`) in `space`: its trial params, as the
    samplers name them, and its config; None without a recipe, or when the space (narrowed
    by a space file) cannot express it. Every weight dimension takes ``recipe["weights"]``;
    a dimension the recipe does not name takes its first choice (switches off)."""
    if recipe is None:
        return None
    params: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for d in space.dimensions:
        if d.members:
            value = recipe.get("weights", d.choices[0])
        else:
            value = recipe.get(d.target.removeprefix(KNOB_PREFIX), d.choices[0])
        if value not in d.choices:
            return None
        values[d.name] = value
        if isinstance(d, BatchSize):
            params[LOG2_BATCH_SIZE] = int(math.log2(value))
        else:
            params[d.name] = value
    return params, space.config_from(values)
