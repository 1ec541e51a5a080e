"""Commands on a study's results: show, plot, export, verify, report."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autotune import defaults
from autotune.cli import output
from autotune.cli.common import storage_args
from autotune.errors import NothingFoundError, UsageError
from autotune.export import FORMATS as EXPORT_FORMATS  # no torch: fine for --help

EXPORT_EPILOG = """examples:
  autotune export --study mnist-cpu -o best.json
  autotune export --study mnist-tt --format tt-mixed-precision -o mixed_precision.json
  autotune export --study mnist-tt --format script -o run_best.py
  autotune export --study NAME --format tt-mixed-precision --loader pkg.module:ModelLoader@variant
"""


def add_parsers(sub: Any) -> None:
    sh = sub.add_parser("show", help="list a study's trials")
    storage_args(sh, study_required=True)
    output.add_format(sh, "the trials")

    p = sub.add_parser("plot", help="draw throughput vs accuracy drop with the Pareto front")
    storage_args(p, study_required=True)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("pareto.png"),
        help="image file; .png or .svg (default pareto.png)",
    )
    # "image", the old name of drawing (no --format), is still accepted.
    p.add_argument(
        "--format",
        choices=(*output.FORMATS, "image"),
        metavar="{" + ",".join(output.FORMATS) + "}",
        help="print the plotted points as a table or as JSON instead of drawing",
    )

    e = sub.add_parser(
        "export",
        help="write the best feasible config (JSON, tt-xla mixed-precision map, or a script)",
        description="Write the best feasible config of a study.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    storage_args(e, study_required=True)
    e.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    e.add_argument(
        "--loader",
        metavar="SPEC",
        help="with --format tt-mixed-precision: write the map where this tt-forge-models "
        "loader's get_weight_dtype_config_path() says (pkg.module:ModelLoader[@variant]), "
        "the file tt-xla's test runner applies",
    )
    # The format of the file written (to stdout without -o), not a rendering of it:
    # no table here. json is the same JSON document as elsewhere.
    e.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="json",
        help="file format. json: autotune's config (default); tt-mixed-precision: tt-xla's "
        "{weight: dtype} map for tt_torch.apply_weight_dtype_overrides; script: a runnable "
        "tt-xla script (the map also for --emulate tt studies; the script for --backend tt "
        "studies)",
    )
    v = sub.add_parser(
        "verify",
        help="replay an exported config here and compare with the export",
        description="Run an exported config (autotune export --format json) in fresh trial "
        "processes with the study's measurement protocol, and compare throughput, top-1, "
        "agreement and PCC with the export, and this machine's environment with the "
        "export's. Exit 0: it holds here; 1: it does not (the reason on stderr); 2: bad input.",
    )
    v.add_argument("export", type=Path, metavar="EXPORT.json", help="written by autotune export")
    v.add_argument(
        "--rounds",
        type=int,
        default=defaults.VERIFY_ROUNDS,
        help=f"fresh processes to run (default {defaults.VERIFY_ROUNDS})",
    )
    v.add_argument(
        "--max-slowdown",
        type=float,
        default=defaults.MAX_SLOWDOWN,
        metavar="FRACTION",
        help="fail when the median throughput is more than this below the export's "
        f"(default {defaults.MAX_SLOWDOWN:.2f})",
    )
    v.add_argument(
        "--max-metric-drop",
        "--max-accuracy-drop",
        dest="max_metric_drop",
        type=float,
        metavar="DROP",
        help="drop of the study's metric vs fp32 (here) allowed, in its unit; default: the "
        "study's constraint",
    )
    output.add_format(v, "the comparison")
    v.add_argument("--trial-python", help="interpreter that runs the rounds (default: this one)")
    v.add_argument("--worker-python", dest="trial_python", help=argparse.SUPPRESS)  # old name
    v.add_argument(
        "--cache-dir", type=Path, help=f"compile cache (default {defaults.CACHE_DIR_SHOWN})"
    )
    # An export naming a model file or module is not imported (run) on its word alone.
    v.add_argument(
        "--model",
        metavar="FILE.py:ATTR",
        help="the model to replay the config on, replacing the export's (a model file or "
        "module the export names is imported only when given here or with --trust-model)",
    )
    v.add_argument(
        "--trust-model",
        action="store_true",
        help="import and run the model file or module the export names",
    )

    r = sub.add_parser(
        "report",
        help="write one self-contained HTML page about a study, to share",
        description="The Pareto plot, the pick with its re-measurements and the export "
        "command, every trial with its status and reason, failures grouped by reason, the "
        "layer sensitivity chart (when the storage has one), the study's options and "
        "environment. Images are inline: the file is all there is to send.",
    )
    storage_args(r, study_required=True)
    r.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="HTML file")


def cmd_show(args: argparse.Namespace) -> int:
    from autotune.analysis import failure_counts, trial_rows
    from autotune.cli import views
    from autotune.fidelity_verdict import study_verdict
    from autotune.records import study_record
    from autotune.storage import load_study

    study = load_study(args.storage, args.study_name)
    rows = trial_rows(study)
    failures = failure_counts(rows)
    record = study_record(study)
    verdict = study_verdict(study, record)
    if args.format == "json":
        data = views.show_json(study.study_name, record.to_attrs(), rows, failures)
        if verdict is not None:
            data["math_fidelity"] = verdict.to_dict()
        output.data_json(data)
    else:
        table = views.show_table(rows, failures, record)
        output.data(table if verdict is None else f"{table}\n{verdict.summary()}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from autotune.analysis import trial_rows
    from autotune.cli import views
    from autotune.plots import draw, study_plot_data
    from autotune.records import study_record
    from autotune.storage import load_study

    if args.format is None or args.format == "image":
        check_writable(args.output)
    study = load_study(args.storage, args.study_name)
    data = study_plot_data(trial_rows(study), study_record(study))
    if args.format == "json":
        output.data_json(data._asdict())
        return 0
    if args.format == "table":
        output.data(views.plot_table(data))
        return 0
    if args.output.suffix not in (".png", ".svg"):
        raise UsageError(f"plot output must end in .png or .svg, not {args.output.name!r}")
    if data.message is not None:
        raise NothingFoundError(f"study {args.study_name!r}: {data.message}")
    with writing(args.output):
        draw(data, args.output)
    output.wrote(args.output)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autotune.export import check_format, export_dict, notes, render, save
    from autotune.storage import load_study

    if args.loader is not None:
        args.output = _loader_map_path(args)
    study = load_study(args.storage, args.study_name)
    check_format(study, args.format)
    data = export_dict(study)
    text = render(data, args.format)
    with writing(args.output):
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
        save(text, args.output, args.format)
    for note in notes(data, args.format):
        output.say(f"note: {note}")
    if args.output is None:
        output.data(text, end="")
    else:
        output.wrote(args.output)
    return 0


def _loader_map_path(args: argparse.Namespace) -> Path:
    """Where `--loader` keeps its mixed-precision map (only that format, not beside -o)."""
    from studies.sources.forge import mixed_precision_path

    if args.format != "tt-mixed-precision":
        raise UsageError(f"--loader is for --format tt-mixed-precision, not {args.format}")
    if args.output is not None:
        raise UsageError("give -o or --loader, not both (--loader says where the map goes)")
    return mixed_precision_path(args.loader)


def cmd_verify(args: argparse.Namespace) -> int:
    from autotune.verify import render_text, verify

    report = verify(
        args.export,
        rounds=args.rounds,
        max_slowdown=args.max_slowdown,
        max_metric_drop=args.max_metric_drop,
        trial_python=args.trial_python,
        cache_dir=args.cache_dir,
        model=args.model,
        trust_model=args.trust_model,
    )
    if args.format == "json":
        output.data_json(report.to_dict())
    else:
        output.data(render_text(report))
    reason = report.failure()
    if reason is not None:
        output.say(f"verify failed: {reason}")
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autotune.report import write_report

    if args.output.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"report output must end in .html, not {args.output.name!r}")
    check_writable(args.output)
    with writing(args.output):
        write_report(args.storage, args.study_name, args.output)
    output.wrote(args.output)
    return 0


def check_writable(path: Path) -> None:
    """Refuse an output file that cannot be written, before the study is read."""
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: not writable")


@contextmanager
def writing(path: Path | None) -> Iterator[None]:
    """An OSError writing `path` (a read-only file system, a full disk) as one line."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and path is None:
            raise
        raise UsageError(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None
