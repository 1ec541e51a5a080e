"""`autotune sensitivity`: per-layer accuracy when one weight is lowered to block-float."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autotune import defaults
from autotune.cli import output
from autotune.errors import UsageError


def add_parsers(sub: Any) -> None:
    se = sub.add_parser(
        "sensitivity",
        help="per-layer accuracy when one weight is lowered to bfp_bf8 / bfp_bf4",
        description="Lower one linear weight at a time through tt-metal's exact block-float "
        "rounding (on this CPU) and compare with fp32. Cached in --cache-dir by model and "
        "weights; studies of the same model reuse it.",
    )
    se.add_argument("--model", required=True)
    se.add_argument(
        "--storage", default=defaults.STORAGE, help="also record the result here (HTML report)"
    )
    se.add_argument("--eval-limit", type=int, help="evaluate on the first N samples only")
    se.add_argument("--recompute", action="store_true", help="ignore the cached result")
    output.add_format(se, "each layer's accuracy drop and error")
    se.add_argument("-o", "--output", type=Path, help="also draw a bar chart (.png or .svg)")
    se.add_argument(
        "--cache-dir",
        type=Path,
        help=f"result and reference cache (default {defaults.CACHE_DIR_SHOWN})",
    )


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from autotune import sensitivity as sens
    from autotune.cli import views
    from autotune.jobs import layer_sensitivity
    from autotune.launch.runner import RunnerSettings
    from autotune.study_options import default_cache_dir
    from studies import get_study

    get_study(args.model)  # unknown model: one line, exit 2
    if args.output is not None and args.output.suffix not in (".png", ".svg"):
        raise UsageError(f"chart output must end in .png or .svg, not {args.output.name!r}")
    cache_dir = args.cache_dir or default_cache_dir()
    rows = layer_sensitivity(
        args.model,
        RunnerSettings(cache_dir=cache_dir),
        cache_dir,
        args.eval_limit,
        recompute=args.recompute,
        storage_url=args.storage,
    )
    if args.output is not None:
        sens.draw(sens.plot_data(args.model, rows), args.output)
        output.wrote(args.output)
    if args.format == "json":
        output.data_json(views.sensitivity_json(args.model, sens.NUMERICS_RULE, rows))
    else:
        output.data(views.sensitivity_table(rows))
    return 0
