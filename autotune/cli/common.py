"""Arguments and settings shared by several commands."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from autotune import defaults
from autotune.storage import DEFAULT_STORAGE

EPILOG = """examples:
  autotune study --model mnist --trials 50
  autotune study --model mnist --space narrow.toml --memory-limit 2G
  autotune show --study mnist-cpu
  autotune plot --study mnist-cpu -o pareto.png
  autotune export --study mnist-cpu -o best.json
  autotune verify best.json --rounds 3
  autotune report --study mnist-cpu -o report.html
"""


def parse_size(text: str) -> int:
    """'1.5G', '800M', '2GiB', '4096' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 800M or 2G)")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def storage_args(p: argparse.ArgumentParser, study_required: bool) -> None:
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"SQLAlchemy URL of the study storage (default {DEFAULT_STORAGE})",
    )
    p.add_argument(
        "--study",
        "--study-name",
        dest="study_name",
        required=study_required,
        help="study name" + ("" if study_required else " (default MODEL-BACKEND)"),
    )


def host_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trial-python", help="interpreter that runs trials (default: this one)")
    # The flag's name before "worker" came to mean only the `autotune worker` command.
    p.add_argument("--worker-python", dest="trial_python", help=argparse.SUPPRESS)
    p.add_argument(
        "--jobs",
        type=int,
        default=defaults.JOBS,
        help=f"trials run at once on this host (default {defaults.JOBS})",
    )
    p.add_argument(
        "--devices",
        metavar="IDS",
        help="comma-separated device ids: one trial per device at once",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=defaults.HEARTBEAT_S,
        metavar="SECONDS",
        help="heartbeat interval; a trial silent for 3 intervals is re-queued",
    )
    p.add_argument(
        "--cache-dir", type=Path, help="compile and reference cache (default ~/.cache/autotune)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def host_options(args: argparse.Namespace) -> dict[str, Any]:
    """Settings of this host (not stored with the study)."""
    from autotune.liveness import check_heartbeat
    from autotune.study_options import default_cache_dir

    check_heartbeat(args.heartbeat)  # before the study is opened or created
    devices = tuple(d for d in args.devices.split(",") if d) if args.devices else None
    return {
        "storage": args.storage,
        "study_name": args.study_name,
        "trial_python": args.trial_python,
        "cache_dir": args.cache_dir or default_cache_dir(),
        "jobs": len(devices) if devices else args.jobs,
        "devices": devices,
        "heartbeat_s": args.heartbeat,
        "progress": not args.no_progress,
    }
