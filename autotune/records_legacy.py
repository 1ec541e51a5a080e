"""Older layouts of what autotune stored, upgraded to the current one on read: the only
place that knows them. `autotune.records` calls these from its `from_attrs` readers and
`autotune.export` from `load_config`; everything else sees the current layout only.

Each function takes the stored mapping as read and returns it in the current layout, the
input left as it was. Plain dicts in and out: no Optuna here.
"""

from __future__ import annotations

from typing import Any

# A study's record, schema 1: these options at the top level too (or, in a study another
# tool wrote, only there); schema 2 keeps each once, under "options".
_TOP_LEVEL_OPTIONS = ("model", "backend", "max_accuracy_drop", "min_agreement")
# Export schemas 1-2 called the backend's knobs "backend_options" (schema 3: "knobs").
OLD_EXPORT_SCHEMAS = (1, 2)


def study_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A study's record (`records.StudyRecord`) in the current layout. ``schema`` stays the
    layout it was read from (1 where the record has none)."""
    out = dict(attrs)
    out.setdefault("schema", 1)
    top = {k: out.pop(k) for k in _TOP_LEVEL_OPTIONS if k in out}
    if top:
        out["options"] = {**top, **(out.get("options") or {})}
    if "seed_recipe" in out:  # the reference recipe's name before the rename
        out.setdefault("reference_recipe", out.pop("seed_recipe"))
    if "reference_recipe" in out:
        out["reference_recipe"] = _config(out["reference_recipe"])
    return out


def trial_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A trial's record (`records.TrialRecord`) in the current layout."""
    config = attrs.get("config")
    return {**attrs, "config": _config(config)} if _config(config) is not config else attrs


def trial_block_times(attrs: dict[str, Any]) -> list[float]:
    """A trial's raw block times from its record's attributes, where studies written before
    they moved to a trial system attr (`records.BLOCK_TIMES_ATTR`) kept them."""
    return attrs.get("block_times", [])


def export_data(data: dict[str, Any]) -> dict[str, Any]:
    """An export (`autotune.export.export_dict`) of any readable schema with the keys of the
    current one; ``schema`` stays the one it was written with."""
    if "backend_options" not in data:
        return data
    out = dict(data)
    out.setdefault("knobs", out.pop("backend_options"))
    return out


def _config(d: Any) -> Any:
    """A stored config (`TrialConfig.to_dict`): records written before the rename call the
    backend's knobs "extras"."""
    if not isinstance(d, dict) or "extras" not in d:
        return d
    out = dict(d)
    out["knobs"] = out.pop("extras")
    return out
