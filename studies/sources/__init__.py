"""Models from where they live, each turned into a `studies.Study` by a small source module:

- ``hf:<local dir or hub id>``: a Hugging Face transformers model (`studies.sources.hf`);
- ``torchvision:<name>``, ``timm:<name>``: the vision zoos (`studies.sources.zoo`);
- ``<package.module>:<ForgeModel subclass>[@variant]``: a tt-forge-models loader
  (`studies.sources.forge`, reached through `studies.get_study`'s user-model path).

A source's options (``--seq-len``, ``--eval-data``, ``--weights``) travel inside the model
spec, as a query (``hf:./bert?seq_len=64``), so every process that resolves the spec, the
trial processes and a later ``autotune verify`` of the export included, builds the same
study. Nothing here imports torch or the model libraries at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from autotune.errors import UsageError

if TYPE_CHECKING:
    from studies import Study

# prefix -> (module, the spec options it takes)
PREFIXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "hf": ("studies.sources.hf", ("seq_len", "eval_data")),
    "torchvision": ("studies.sources.zoo", ("weights", "eval_data")),
    "timm": ("studies.sources.zoo", ("weights", "eval_data")),
}
#: The module of tt-forge-models loaders (``pkg.module:Loader[@variant]``), and its options.
FORGE = "studies.sources.forge"
FORGE_OPTIONS = ("eval_data",)
#: Every spec option, as StudyOptions and the CLI name them (flag: ``--seq-len``).
OPTIONS = ("seq_len", "eval_data", "weights", "metric")
#: Options every study takes, whatever its source (`studies.get_study` applies them).
GENERIC_OPTIONS = ("metric",)
_INT_OPTIONS = ("seq_len",)


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``hf:./bert?seq_len=64`` -> (``hf:./bert``, {"seq_len": 64})."""
    base, sep, query = spec.partition("?")
    if not sep:
        return spec, {}
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in OPTIONS:
            raise UsageError(
                f"model {spec!r}: unknown option {key!r} (known: {', '.join(OPTIONS)})"
            )
        if key in _INT_OPTIONS:
            try:
                options[key] = int(value)
            except ValueError:
                raise UsageError(
                    f"model {spec!r}: {key} must be an integer, not {value!r}"
                ) from None
        else:
            options[key] = value
    return base, options


def with_options(spec: str, **values: Any) -> str:
    """`spec` with these options set (None: left as the spec has it), canonical: options
    sorted, so equal studies have equal specs."""
    base, options = split_spec(spec)
    options |= {k: v for k, v in values.items() if v is not None}
    if not options:
        return base
    query = "&".join(f"{k}={quote(str(options[k]), safe='/.-_~:')}" for k in sorted(options))
    return f"{base}?{query}"


def display_name(spec: str) -> str:
    """The spec without its options (study names, titles)."""
    return split_spec(spec)[0]


def prefix_of(spec: str) -> str | None:
    """The source prefix of `spec` (``hf``, ``torchvision``, ``timm``), or None."""
    head, colon, _ = spec.partition(":")
    return head if colon and head in PREFIXES else None


def check_options(spec: str, options: dict[str, Any], accepted: tuple[str, ...]) -> None:
    """Bad input: an option the source does not use is refused, never silently ignored."""
    extra = [k for k in options if k not in accepted]
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise UsageError(
            f"{flags} does not apply to model {display_name(spec)!r}"
            + (
                f" (it takes {', '.join('--' + a.replace('_', '-') for a in accepted)})"
                if accepted
                else ""
            )
        )


def resolve(spec: str) -> Study:
    """The study of a prefixed spec (`prefix_of(spec)` is not None)."""
    base, options = split_spec(spec)
    prefix, _, target = base.partition(":")
    module_name, accepted = PREFIXES[prefix]
    check_options(spec, options, accepted)
    if not target:
        raise UsageError(f"model {spec!r}: name a model after {prefix}:")
    module = importlib.import_module(module_name)
    return module.make_study(spec, prefix, target, options)


def loader_study(spec: str, obj: Any, variant: str | None, options: dict[str, Any]) -> Study | None:
    """The study of `obj` when it is a tt-forge-models loader class, else None. Source
    modules are imported by name, as `resolve` does: each subclasses `studies.Study`."""
    forge = importlib.import_module(FORGE)
    if not forge.is_loader(obj):
        return None
    check_options(spec, options, FORGE_OPTIONS)
    return forge.ForgeStudy(spec, obj, variant, options)
