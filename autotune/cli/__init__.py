"""The `autotune` command. Data goes to stdout, messages to stderr (`output`, the one sink).

Exit codes: 0 ok, 1 nothing found, 2 usage or input error, 130 interrupted.
Heavy imports (torch, optuna, matplotlib) happen inside the subcommands, so --help is fast.
One module per command group; each adds its parsers and names its handlers in COMMANDS.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from autotune.cli import output, results, sensitivity, study
from autotune.cli.common import EPILOG
from autotune.errors import AutotuneError
from autotune.secrets import scrubbed
from autotune.study_options import parse_size

__all__ = ["build_parser", "main", "parse_size", "run"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "study": study.cmd_study,
    "worker": study.cmd_worker,
    "sensitivity": sensitivity.cmd_sensitivity,
    "show": results.cmd_show,
    "plot": results.cmd_plot,
    "export": results.cmd_export,
    "verify": results.cmd_verify,
    "report": results.cmd_report,
}


# Commands that only read a study.
READERS = ("show", "plot", "export", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotune",
        description="Find the fastest inference config of a PyTorch model that stays accurate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (study, sensitivity, results):  # the order `autotune --help` lists them
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM stops a study like Ctrl-C does: the running trial is killed and recorded.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a third Ctrl-C: no traceback here
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        output.say("interrupted; rerun the same command to resume")
        return 130
    except BrokenPipeError:  # e.g. `autotune show ... | head`: the reader left, that's fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except AutotuneError as exc:
        if args.debug:
            raise
        output.say(str(exc))
        return exc.exit_code
    except Exception as exc:
        if args.debug:
            raise
        first = scrubbed(_first_line(exc), getattr(args, "storage", None) or "")
        if _from_storage(exc):
            # The storage failing in a way no command checks for (a corrupt database file,
            # a schema another program wrote): one line, never a traceback.
            output.say(f"storage error: {first}")
            return 2
        unreadable = KeyError | TypeError | ValueError | AttributeError
        if args.command in READERS and isinstance(exc, unreadable):
            # Records edited by hand or by another tool, in a way `records_check` does not
            # name: the study cannot be read, which is bad input, not a crash.
            output.say(
                f"study {getattr(args, 'study_name', '?')!r} holds records this autotune "
                f"cannot read ({type(exc).__name__}: {first}); --debug shows where"
            )
            return 2
        raise


def _first_line(exc: BaseException) -> str:
    """What went wrong, in one line: the driver's own words where Optuna wrapped them
    (its StorageInternalError says only that a commit failed)."""
    inner = exc.__cause__ if type(exc).__name__ == "StorageInternalError" and exc.__cause__ else exc
    inner = getattr(inner, "orig", None) or inner  # SQLAlchemy's wrapper of a DB-API error
    return (str(inner).strip().splitlines() or [type(inner).__name__])[0]


def _from_storage(exc: BaseException) -> bool:
    """Raised by SQLAlchemy, a database driver or Optuna's storage (or caused by one)."""
    chain = [exc, exc.__cause__, exc.__context__]
    modules = (type(e).__module__ for e in chain if e is not None)
    return any(m.startswith(("sqlalchemy", "sqlite3", "psycopg", "optuna.")) for m in modules)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run() -> None:
    sys.exit(main())
