"""Commands on a finished (or running) study: show, plot, export, verify, report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autotune.cli.common import storage_args
from autotune.errors import NothingFoundError, UsageError

EXPORT_EPILOG = """examples:
  autotune export --study mnist-cpu -o best.json
  autotune export --study mnist-tt --format tt-mixed-precision -o mixed_precision.json
  autotune export --study mnist-tt --format script -o run_best.py
"""


def add_parsers(sub: Any) -> None:
    sh = sub.add_parser("show", help="list a study's trials")
    storage_args(sh, study_required=True)
    sh.add_argument("--format", choices=["table", "json"], default="table")

    p = sub.add_parser("plot", help="draw throughput vs accuracy drop with the Pareto front")
    storage_args(p, study_required=True)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("pareto.png"),
        help="image file; .png or .svg (default pareto.png)",
    )
    p.add_argument(
        "--format",
        choices=["image", "json"],
        default="image",
        help="json prints the plotted data instead of drawing",
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
        "--format",
        choices=["json", "tt-mixed-precision", "script"],
        default="json",
        help="json: autotune's config (default); tt-mixed-precision: tt-xla's {weight: dtype} "
        "map for tt_torch.apply_weight_dtype_overrides; script: a runnable tt-xla script "
        "(the map also for --emulate tt studies; the script for --backend tt studies)",
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
    v.add_argument("--rounds", type=int, default=3, help="fresh processes to run (default 3)")
    v.add_argument(
        "--max-slowdown",
        type=float,
        default=0.10,
        metavar="FRACTION",
        help="fail when the median throughput is more than this below the export's (default 0.10)",
    )
    v.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="top-1 drop vs fp32 (here) allowed; default: the study's constraint",
    )
    v.add_argument("--format", choices=["table", "json"], default="table")
    v.add_argument("--worker-python", help="interpreter that runs the rounds (default: this one)")
    v.add_argument("--cache-dir", type=Path, help="compile cache (default ~/.cache/autotune)")

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
    from autotune.report import trial_table
    from autotune.storage import STUDY_ATTR, load_study

    study = load_study(args.storage, args.study_name)
    rows = trial_rows(study)
    if args.format == "json":
        payload = {
            "study": study.study_name,
            "meta": study.user_attrs.get(STUDY_ATTR, {}),
            "failures": failure_counts(rows),
            "trials": [r.__dict__ | {"throughput": r.throughput} for r in rows],
        }
        print(json.dumps(payload, indent=1, default=str))
        return 0
    print(trial_table(rows))
    failures = failure_counts(rows)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "none"
    print(f"\n{len(rows)} trials; not measured, by reason: {summary}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from autotune.analysis import trial_rows
    from autotune.plots import draw, pareto_plot_data
    from autotune.storage import STUDY_ATTR, load_study

    study = load_study(args.storage, args.study_name)
    meta = study.user_attrs.get(STUDY_ATTR, {})
    data = pareto_plot_data(
        trial_rows(study),
        model=meta.get("model", "?"),
        backend=meta.get("backend", "?"),
        device=meta.get("reference_environment", {}).get("device", "unknown device"),
        max_accuracy_drop=meta.get("max_accuracy_drop", 0.5),
        min_agreement=meta.get("min_agreement"),
    )
    if args.format == "json":
        print(json.dumps(data._asdict(), indent=1))
        return 0
    if args.output.suffix not in (".png", ".svg"):
        raise UsageError(f"plot output must end in .png or .svg, not {args.output.name!r}")
    if data.message is not None:
        raise NothingFoundError(f"study {args.study_name!r}: {data.message}")
    draw(data, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0




def cmd_export(args: argparse.Namespace) -> int:
    from autotune.export import check_format, export_dict, notes, render, save
    from autotune.storage import load_study

    study = load_study(args.storage, args.study_name)
    check_format(study, args.format)
    data = export_dict(study)
    text = render(data, args.format)
    save(text, args.output, args.format)
    for note in notes(data, args.format):
        print(f"autotune: note: {note}", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from autotune.verify import render_text, verify

    report = verify(
        args.export,
        rounds=args.rounds,
        max_slowdown=args.max_slowdown,
        max_accuracy_drop=args.max_accuracy_drop,
        worker_python=args.worker_python,
        cache_dir=args.cache_dir,
    )
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(render_text(report))
    reason = report.failure()
    if reason is not None:
        print(f"autotune: verify failed: {reason}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autotune.html_report import write_report

    if args.output.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"report output must end in .html, not {args.output.name!r}")
    write_report(args.storage, args.study_name, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0

