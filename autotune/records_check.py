"""Stored records checked on read: a record edited by hand, or written by another tool, is
refused in one line naming the field (`CorruptRecordError`, exit 2), not read until some
reader trips over it with a traceback.

Each field of a record dataclass is checked against the kind its annotation names (str,
int, float, bool, dict, list); None is "not written" and always passes. Metrics, the one
mapping every reader does arithmetic on, are checked to hold numbers (or None).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from autotune.errors import UsageError

_KINDS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": int | float,
    "bool": bool,
    "dict": dict,
    "list": list,
}


class CorruptRecordError(UsageError):
    """A stored record that does not have the layout autotune writes."""


def check_record(cls: type, values: dict[str, Any], what: str) -> None:
    """CorruptRecordError for the first of `values` (fields of dataclass `cls`) of the
    wrong kind."""
    for f in fields(cls):
        value = values.get(f.name)
        if value is None:
            continue
        kind = _KINDS.get(str(f.type).split("[")[0].split("|")[0].strip())
        if kind is None:
            continue
        wrong = not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))
        if wrong:
            raise CorruptRecordError(
                f"{what} is corrupt: {f.name} holds {type(value).__name__} {_short(value)}, "
                f"not {str(f.type).split('|')[0].strip()}"
            )
    metrics = values.get("metrics")
    if isinstance(metrics, dict):
        for key, v in metrics.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise CorruptRecordError(
                    f"{what} is corrupt: metrics[{key!r}] holds {_short(v)}, not a number"
                )
            if isinstance(v, float) and math.isnan(v):
                raise CorruptRecordError(f"{what} is corrupt: metrics[{key!r}] is NaN")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."
