"""The `autotune` command. Data goes to stdout, messages to stderr.

Exit codes: 0 ok, 1 nothing found, 2 usage or input error, 130 interrupted.
Heavy imports (torch, optuna, matplotlib) happen inside the subcommands, so --help is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError, NothingFoundError, UsageError
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

    def host_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--worker-python", help="interpreter that runs trials (default: this one)")
        p.add_argument(
            "--jobs", type=int, default=1, help="trials run at once on this host (default 1)"
        )
        p.add_argument(
            "--devices",
            metavar="IDS",
            help="comma-separated device ids: one trial per device at once",
        )
        p.add_argument(
            "--heartbeat",
            type=int,
            default=10,
            metavar="SECONDS",
            help="heartbeat interval; a trial silent for 3 intervals is re-queued",
        )
        p.add_argument(
            "--cache-dir", type=Path, help="compile and reference cache (default ~/.cache/autotune)"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser(
        "study",
        help="run (or resume) a tuning study",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--model", required=True, help="study to tune (e.g. mnist)")
    s.add_argument("--backend", default="cpu", help="device family: cpu (default), cuda, tt")
    s.add_argument(
        "--emulate",
        choices=["tt"],
        help="run Tenstorrent weight numerics (bf16/bfp_bf8/bfp_bf4) exactly on "
        "this CPU: accuracy as on the card, throughput of the CPU",
    )
    s.add_argument(
        "--confirm",
        type=int,
        default=3,
        metavar="K",
        help="re-measure the K best feasible trials, then the top one while it is not "
        "re-measured (at most 2K in all); the pick pools all measurements (default 3; "
        "0: no re-measurement)",
    )
    s.add_argument(
        "--no-seed",
        action="store_true",
        help="do not queue the sensitivity-ordered dtype maps (block-float spaces) before sampling",
    )
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
    s.add_argument(
        "--min-agreement",
        type=float,
        metavar="PERCENT",
        help="also require this share of top-1 predictions equal to fp32's (e.g. 99.9)",
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
    s.add_argument("--seed", type=int, help="sampler seed, for repeatable searches")
    s.add_argument(
        "--sampler",
        choices=("autotune", "tpe", "random"),
        default="autotune",
        help="search strategy: autotune's (climbs batch size and uniform precision, then "
        "TPE; default), plain TPE, or random",
    )
    s.add_argument(
        "--stop-slower",
        type=float,
        default=3.0,
        metavar="X",
        help="stop a trial after warm-up when it is X times slower than the best feasible "
        "one so far (pruned as slow: not timed, not evaluated; default 3; 0 never stops)",
    )
    s.add_argument("--eval-limit", type=int, help="evaluate accuracy on the first N samples only")
    host_args(s)

    w = sub.add_parser(
        "worker",
        help="join an existing study (e.g. from another host) and run its remaining trials",
        description="Run trials of a study created by `autotune study`, sharing its storage "
        "(e.g. PostgreSQL) with other hosts, until the study's trial budget is used.",
    )
    storage_args(w, study_required=True)
    host_args(w)

    se = sub.add_parser(
        "sensitivity",
        help="per-layer accuracy when one weight is lowered to bfp_bf8 / bfp_bf4",
        description="Lower one linear weight at a time through tt-metal's exact block-float "
        "rounding (on this CPU) and compare with fp32. Cached in --cache-dir by model and "
        "weights; studies of the same model reuse it.",
    )
    se.add_argument("--model", required=True)
    se.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="also record the result here (HTML report)"
    )
    se.add_argument("--eval-limit", type=int, help="evaluate on the first N samples only")
    se.add_argument("--recompute", action="store_true", help="ignore the cached result")
    se.add_argument("--format", choices=["table", "json"], default="table")
    se.add_argument("-o", "--output", type=Path, help="also draw a bar chart (.png or .svg)")
    se.add_argument(
        "--cache-dir", type=Path, help="result and reference cache (default ~/.cache/autotune)"
    )

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
    except BrokenPipeError:  # e.g. `autotune show ... | head`: the reader left, that's fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except AutotuneError as exc:
        if args.debug:
            raise
        print(f"autotune: {exc}", file=sys.stderr)
        return exc.exit_code


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _host_options(args: argparse.Namespace) -> dict[str, Any]:
    """Settings of this host (not stored with the study)."""
    from autotune.tuner import check_heartbeat, default_cache_dir

    check_heartbeat(args.heartbeat)  # before the study is opened or created
    devices = tuple(d for d in args.devices.split(",") if d) if args.devices else None
    return {
        "storage": args.storage,
        "study_name": args.study_name,
        "worker_python": args.worker_python,
        "cache_dir": args.cache_dir or default_cache_dir(),
        "jobs": len(devices) if devices else args.jobs,
        "devices": devices,
        "heartbeat_s": args.heartbeat,
        "progress": not args.no_progress,
    }


def cmd_study(args: argparse.Namespace) -> int:
    from autotune.storage import shown
    from autotune.tuner import StudyOptions, Tuner
    from search_spaces import load_space_file

    if args.emulate and args.backend != "cpu":
        raise UsageError(f"--emulate {args.emulate} runs on the cpu backend, not {args.backend}")
    opts = StudyOptions(
        model=args.model,
        backend=f"{args.backend}-emulate-{args.emulate}" if args.emulate else args.backend,
        seed_from_sensitivity=not args.no_seed,
        confirm=args.confirm,
        trials=args.trials,
        max_accuracy_drop=args.max_accuracy_drop,
        min_agreement=args.min_agreement,
        space=load_space_file(args.space) if args.space else None,
        max_batch_size=args.max_batch_size,
        measure_seconds=args.measure_seconds,
        timeout_s=args.timeout_per_trial,
        memory_limit_bytes=args.memory_limit,
        seed=args.seed,
        sampler=args.sampler,
        stop_ratio=args.stop_slower,
        eval_limit=args.eval_limit,
        **_host_options(args),
    )
    tuner = Tuner(opts)
    space = tuner.space
    print(
        f"study {opts.name!r}: {opts.model} on {opts.backend}, {len(space.dimensions)} "
        f"dimensions, {space.size():,} configs; feasible = top-1 drop <= "
        f"{opts.max_accuracy_drop:g} points vs fp32"
        + (f", agreement >= {opts.min_agreement:g}%" if opts.min_agreement is not None else "")
        + f"; storage {shown(opts.storage)}",
        file=sys.stderr,
    )
    return _run_and_summarise(tuner)


def cmd_worker(args: argparse.Namespace) -> int:
    from autotune.storage import STUDY_ATTR, load_study
    from autotune.tuner import StudyOptions, Tuner

    host = _host_options(args)
    meta = load_study(args.storage, args.study_name).user_attrs.get(STUDY_ATTR)
    if not meta or "options" not in meta:
        raise UsageError(f"study {args.study_name!r} was not created by autotune study")
    tuner = Tuner(StudyOptions.from_study(meta, **host), join_existing=True)
    print(
        f"joined study {args.study_name!r}: budget {tuner.budget} trials, "
        f"{tuner.counted_trials()} done",
        file=sys.stderr,
    )
    return _run_and_summarise(tuner)


def _run_and_summarise(tuner: Any) -> int:
    from autotune.analysis import best_feasible, pareto_front, seed_recipe_row, trial_rows
    from autotune.report import reference_line, trial_table

    # One line each: trials sharing this host's cores, CPU trials on different machines.
    said = [m for m in (tuner.jobs_note(), tuner.machine_warning()) if m is not None]
    for line in said:
        print(f"autotune: {line}", file=sys.stderr)
    tuner.run()
    late = tuner.machine_warning()  # another host may have joined meanwhile
    if late is not None and late not in said:
        print(f"autotune: {late}", file=sys.stderr)
    rows = trial_rows(tuner.study)
    print(f"Pareto set of study {tuner.opts.name!r} ({len(rows)} trials):")
    print(trial_table(pareto_front(rows)))
    reference = seed_recipe_row(tuner.study, rows)
    if reference is not None:
        print(reference_line(reference, best_feasible(rows)))
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from autotune import sensitivity as sens
    from autotune.report import format_table
    from autotune.runner import RunnerSettings
    from autotune.tuner import default_cache_dir
    from studies import get_study

    get_study(args.model)  # unknown model: one line, exit 2
    if args.output is not None and args.output.suffix not in (".png", ".svg"):
        raise UsageError(f"chart output must end in .png or .svg, not {args.output.name!r}")
    cache_dir = args.cache_dir or default_cache_dir()
    rows = sens.layer_sensitivity(
        args.model,
        RunnerSettings(cache_dir=cache_dir),
        cache_dir,
        args.eval_limit,
        recompute=args.recompute,
        storage_url=args.storage,
    )
    if args.output is not None:
        sens.draw(sens.plot_data(args.model, rows), args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "model": args.model,
                    "rule": sens.NUMERICS_RULE,
                    "rows": [r._asdict() for r in rows],
                },
                indent=1,
            )
        )
        return 0
    ordered = [rows[0], *sorted(rows[1:], key=lambda r: (r.dtype, r.score), reverse=True)]
    print(
        format_table(
            ["weight", "dtype", "drop(pt)", "changed(%)", "pcc", "max|err|", "mean|err|"],
            [
                [
                    r.weight or "(none: all bf16)",
                    r.dtype,
                    f"{r.accuracy_drop:.3f}",
                    f"{100 * (1 - r.agreement):.2f}",
                    f"{r.pcc:.5f}",
                    f"{r.max_abs_error:.3g}",
                    f"{r.mean_abs_error:.3g}",
                ]
                for r in ordered
            ],
        )
    )
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


EXPORT_EPILOG = """examples:
  autotune export --study mnist-cpu -o best.json
  autotune export --study mnist-tt --format tt-mixed-precision -o mixed_precision.json
  autotune export --study mnist-tt --format script -o run_best.py
"""


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


COMMANDS = {
    "study": cmd_study,
    "worker": cmd_worker,
    "sensitivity": cmd_sensitivity,
    "show": cmd_show,
    "plot": cmd_plot,
    "export": cmd_export,
    "verify": cmd_verify,
    "report": cmd_report,
}


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
