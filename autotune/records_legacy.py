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
# Export schemas 1-2 called the backend's knobs "backend_options" (schema 3: "knobs"); 1-3
# knew top-1 only (schema 4: the study's metric).
OLD_EXPORT_SCHEMAS = (1, 2, 3, 4)
TOP1 = {"name": "top-1 accuracy", "unit": "points", "higher_is_better": True}


def study_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A study's record (`records.StudyRecord`) in the current layout. ``schema`` stays the
    layout it was read from (1 where the record has none)."""
    out = dict(attrs)
    out.setdefault("schema", 1)
    if out["schema"] < 3:  # before studies had a metric: top-1, its fp32 value a fraction
        fraction = out.pop("reference_accuracy", None)
        if fraction is not None:
            out.setdefault("reference_metric", 100.0 * fraction)
            out.setdefault("metric", dict(TOP1))
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
    if _config(config) is not config:
        attrs = {**attrs, "config": _config(config)}
    for key in ("metrics", "constraints"):  # the metric's drop was called accuracy_drop
        values = attrs.get(key)
        if isinstance(values, dict) and "accuracy_drop" in values:
            renamed = {"metric_drop" if k == "accuracy_drop" else k: v for k, v in values.items()}
            attrs = {**attrs, key: renamed}
    return attrs


def trial_block_times(attrs: dict[str, Any]) -> list[float]:
    """A trial's raw block times from its record's attributes, where studies written before
    they moved to a trial system attr (`records.BLOCK_TIMES_ATTR`) kept them."""
    return attrs.get("block_times", [])


def export_data(data: dict[str, Any]) -> dict[str, Any]:
    """An export (`autotune.export.export_dict`) of any readable schema with the keys of the
    current one; ``schema`` stays the one it was written with."""
    out = dict(data)
    if "backend_options" in out:
        out.setdefault("knobs", out.pop("backend_options"))
    if out.get("schema", 1) < 4:
        metrics = dict(out.get("metrics") or {})
        if "accuracy_drop" in metrics:
            metrics.setdefault("metric_drop", metrics.pop("accuracy_drop"))
        fraction = metrics.pop("reference_accuracy", None)
        if fraction is not None:
            metrics.setdefault("reference_metric", 100.0 * fraction)
        out["metrics"] = metrics
        constraint = dict(out.get("constraint") or {})
        if "max_accuracy_drop" in constraint:
            constraint.setdefault("max_metric_drop", constraint.pop("max_accuracy_drop"))
        constraint.setdefault("metric", dict(TOP1))
        out["constraint"] = constraint
    return out


def _config(d: Any) -> Any:
    """A stored config (`TrialConfig.to_dict`): records written before the rename call the
    backend's knobs "extras"."""
    if not isinstance(d, dict) or "extras" not in d:
        return d
    out = dict(d)
    out["knobs"] = out.pop("extras")
    return out
