"""The CLI's one output sink: data on stdout, talk on stderr.

Data is what a command was asked for (a table, a JSON document, an exported file's text),
so a pipe or a file gets only that. Talk is what is said about it: notes, warnings,
"wrote FILE", errors. Every command that prints data takes `--format table|json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

FORMATS = ("table", "json")


def add_format(p: argparse.ArgumentParser, what: str) -> None:
    """`--format table|json`: how the command prints `what` on stdout."""
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help=f"{what}: table, for reading (default), or json, one JSON document",
    )


def data(text: str, end: str = "\n") -> None:
    """Data, on stdout."""
    sys.stdout.write(text + end)


def data_json(payload: Any) -> None:
    """Data as one JSON document, on stdout."""
    data(json.dumps(payload, indent=1, default=str))


def tell(line: str) -> None:
    """A line of talk, on stderr, as is."""
    print(line, file=sys.stderr)


def say(message: str) -> None:
    """A line of talk from autotune itself (notes, warnings, errors), on stderr."""
    tell(f"autotune: {message}")


def wrote(path: object) -> None:
    tell(f"wrote {path}")
