"""Commands autotune suggests to its user (the HTML report's, the one-line hints): every
argument shell-quoted, so a study name or path with quotes or spaces stays one argument and
nothing in it runs."""

from __future__ import annotations

import shlex


def command_line(*args: str) -> str:
    """``autotune ARGS...`` as a shell would run it, each argument quoted where needed."""
    return shlex.join(["autotune", *map(str, args)])


def verify_args(export: str, model: str | None) -> list[str]:
    """`autotune verify`'s arguments for an export of a study of `model`: a model file or
    module is named on the command line (verify never imports one on an export's word)."""
    return ["verify", export, *(["--model", model] if model and ":" in model else [])]
