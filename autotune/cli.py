"""The `autotune` command. Data goes to stdout, messages to stderr.

Exit codes: 0 ok, 1 nothing found, 2 usage or input error, 130 interrupted.
Heavy imports (torch, optuna, matplotlib) happen inside the subcommands, so --help is fast.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError, UsageError

EPILOG = """examples:
  autotune study --model mnist --trials 50
  autotune study --model mnist --space narrow.toml --memory-limit 2G
  autotune show --study mnist-cpu
  autotune plot --study mnist-cpu -o pareto.png
  autotune export --study mnist-cpu -o best.json
"""
DEFAULT_STORAGE = "sqlite:///autotune.db"


def parse_size(text: str) -> int:
    """'1.5G', '800M', '2GiB', '4096' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 800M or 2G)")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotune",
        description="Find the fastest inference config of a PyTorch model that stays accurate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    s = sub.add_parser(
        "study",
        help="run (or resume) a tuning study",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--model", required=True, help="study to tune (e.g. mnist)")
    s.add_argument("--backend", default="cpu", help="device family: cpu (default)")
    s.add_argument(
        "--trials",
        type=int,
        default=50,
        help="total finished trials the study should have (rerun to resume)",
    )
    storage_args(s, study_required=False)
    s.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="feasible = top-1 within this many points of fp32 (default 0.5)",
    )
    s.add_argument("--space", type=Path, metavar="FILE", help="TOML/YAML file narrowing the space")
    s.add_argument("--max-batch-size", type=int, help="largest batch size searched (power of 2)")
    s.add_argument(
        "--measure-seconds",
        type=float,
        default=1.0,
        help="timed seconds per trial after warmup (default 1)",
    )
    s.add_argument(
        "--timeout-per-trial",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="kill a trial's process group after this long (default 300)",
    )
    s.add_argument(
        "--memory-limit",
        type=parse_size,
        metavar="SIZE",
        help="cap each worker's memory (RLIMIT_DATA), e.g. 2G; over it is OOM (pruned)",
    )
    s.add_argument("--worker-python", help="interpreter that runs trials (default: this one)")
    s.add_argument("--seed", type=int, help="sampler seed, for repeatable searches")
    s.add_argument("--eval-limit", type=int, help="evaluate accuracy on the first N samples only")
    s.add_argument(
        "--cache-dir", type=Path, help="compile and reference cache (default ~/.cache/autotune)"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

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

    e = sub.add_parser("export", help="write the best feasible config as JSON")
    storage_args(e, study_required=True)
    e.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM stops a study like Ctrl-C does: the running trial is killed and recorded.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("autotune: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except AutotuneError as exc:
        if args.debug:
            raise
        print(f"autotune: {exc}", file=sys.stderr)
        return exc.exit_code
    except LookupError as exc:  # unknown model / backend
        if args.debug:
            raise
        print(f"autotune: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_study(args: argparse.Namespace) -> int:
    from autotune.analysis import pareto_front, trial_rows
    from autotune.report import trial_table
    from autotune.tuner import StudyOptions, Tuner, default_cache_dir

    opts = StudyOptions(
        model=args.model,
        backend=args.backend,
        trials=args.trials,
        storage=args.storage,
        study_name=args.study_name,
        max_accuracy_drop=args.max_accuracy_drop,
        space_file=args.space,
        max_batch_size=args.max_batch_size,
        measure_seconds=args.measure_seconds,
        timeout_s=args.timeout_per_trial,
        memory_limit_bytes=args.memory_limit,
        worker_python=args.worker_python,
        seed=args.seed,
        eval_limit=args.eval_limit,
        cache_dir=args.cache_dir or default_cache_dir(),
        progress=not args.no_progress,
    )
    if opts.worker_python and not Path(opts.worker_python).exists():
        raise UsageError(f"worker python {opts.worker_python!r} does not exist")
    tuner = Tuner(opts)
    space = tuner.space
    print(
        f"study {opts.name!r}: {opts.model} on {opts.backend}, {len(space.dimensions)} dimensions, "
        f"{space.size():,} configs; feasible = top-1 drop <= {opts.max_accuracy_drop:g} points "
        f"vs fp32; storage {opts.storage}",
        file=sys.stderr,
    )
    tuner.run()
    rows = trial_rows(tuner.study)
    print(f"Pareto set of study {opts.name!r} ({len(rows)} trials):")
    print(trial_table(pareto_front(rows)))
    return 0


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
    )
    if args.format == "json":
        print(json.dumps(data._asdict(), indent=1))
        return 0
    if args.output.suffix not in (".png", ".svg"):
        raise UsageError(f"plot output must end in .png or .svg, not {args.output.name!r}")
    if not data.feasible and not data.infeasible:
        raise UsageError(f"study {args.study_name!r} has no measured trial to plot")
    draw(data, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autotune.export import write_export
    from autotune.storage import load_study

    text = write_export(load_study(args.storage, args.study_name), args.output)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


COMMANDS = {"study": cmd_study, "show": cmd_show, "plot": cmd_plot, "export": cmd_export}


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
