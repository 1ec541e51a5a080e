"""Arguments and settings shared by several commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING
from typing import Any

from autotune.study_options import HOST, WHICH, declared

EPILOG = """examples:
  autotune study --model mnist --trials 50
  autotune study --model mnist --space narrow.toml --memory-limit 2G
  autotune show --study mnist-cpu
  autotune plot --study mnist-cpu -o pareto.png
  autotune export --study mnist-cpu -o best.json
  autotune verify best.json --rounds 3
  autotune report --study mnist-cpu -o report.html
"""


def add_options(
    p: argparse.ArgumentParser,
    group: str,
    *,
    after: dict[str, Callable[[argparse.ArgumentParser], None]] | None = None,
    given: dict[str, dict[str, Any]] | None = None,
) -> None:
    """The flags of StudyOptions' fields in `group`, made from their declarations.
    `after[name]` adds what the command has beside option `name`; `given[name]` holds
    add_argument keywords this command sets otherwise (e.g. required)."""
    for f in declared():
        meta = f.metadata
        if meta["group"] != group or meta["help"] is None:
            continue
        cli = dict(meta["cli"])
        hidden = cli.pop("hidden", ())
        if isinstance(f.default, bool):  # a switch; `--no-NAME` turns one that is on off
            kind: dict[str, Any] = {"action": "store_false" if f.default else "store_true"}
            names = cli.pop("flags", (_flag(f.name, negated=f.default),))
        else:
            default = None if f.default is MISSING else f.default  # None: the factory's
            kind = {"default": default, "type": cli.pop("type", _type_of(default))}
            names = cli.pop("flags", (_flag(f.name),))
        cli |= {"help": meta["help"], **(given or {}).get(f.name, {})}
        if f.default is MISSING and f.default_factory is MISSING:
            cli["required"] = True
        p.add_argument(*names, dest=f.name, **kind, **cli)
        for old in hidden:
            p.add_argument(old, dest=f.name, help=argparse.SUPPRESS, **kind)
        if after and f.name in after:
            after[f.name](p)


def _flag(name: str, negated: bool = False) -> str:
    return ("--no-" if negated else "--") + name.replace("_", "-")


def _type_of(default: Any) -> Any:
    return type(default) if isinstance(default, int | float) else None


def storage_args(p: argparse.ArgumentParser, study_required: bool) -> None:
    """`--storage` and `--study`: which study a command works on."""
    unnamed = {"help": "study name (default MODEL-BACKEND)"}  # StudyOptions.name
    add_options(p, WHICH, given={"study_name": {"required": True} if study_required else unnamed})


def options_given(args: argparse.Namespace, group: str) -> dict[str, Any]:
    """The parsed values of the options in `group`; None (not given, no default) is left
    to the field's default."""
    return {
        f.name: getattr(args, f.name)
        for f in declared()
        if f.metadata["group"] == group and getattr(args, f.name, None) is not None
    }


def host_options(args: argparse.Namespace) -> dict[str, Any]:
    """Which study, and the settings of this host (not stored with the study)."""
    from autotune.liveness import check_heartbeat

    check_heartbeat(args.heartbeat)  # before the study is opened or created
    host = options_given(args, WHICH) | options_given(args, HOST)
    if host.get("devices"):
        host["jobs"] = len(host["devices"])  # one trial per device at once
    return host
