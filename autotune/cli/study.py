"""`autotune study` (create or resume a study) and `autotune worker` (join it from another host)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autotune import defaults
from autotune.cli import output
from autotune.cli.common import EPILOG, host_args, host_options, parse_size, storage_args
from autotune.errors import UsageError


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "study",
        help="run (or resume) a tuning study",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--model", required=True, help="study to tune (e.g. mnist)")
    s.add_argument(
        "--backend",
        default=defaults.BACKEND,
        help=f"device family: cpu, cuda, tt (default {defaults.BACKEND})",
    )
    s.add_argument(
        "--emulate",
        choices=["tt"],
        help="run Tenstorrent weight numerics (bf16/bfp_bf8/bfp_bf4) exactly on "
        "this CPU: accuracy as on the card, throughput of the CPU",
    )
    s.add_argument(
        "--confirm",
        type=int,
        default=defaults.CONFIRM,
        metavar="K",
        help="re-measure the K best feasible trials, then the top one while it is not "
        "re-measured (at most 2K in all); the pick pools all measurements (default "
        f"{defaults.CONFIRM}; 0: no re-measurement)",
    )
    s.add_argument(
        "--no-starting-points",
        action="store_true",
        help="skip the sensitivity pass and its dtype maps queued as starting points (done "
        "only where the space offers block-float dtypes); the model's recipe is still queued",
    )
    # The flag's first name, from before "seed" meant only the sampler's RNG seed.
    s.add_argument(
        "--no-seed", dest="no_starting_points", action="store_true", help=argparse.SUPPRESS
    )
    s.add_argument(
        "--trials",
        type=int,
        default=defaults.TRIALS,
        help="total finished trials the study should have (rerun to resume)",
    )
    storage_args(s, study_required=False)
    s.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=defaults.MAX_ACCURACY_DROP,
        metavar="POINTS",
        help="feasible = top-1 within this many points of fp32 "
        f"(default {defaults.MAX_ACCURACY_DROP:g})",
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
        default=defaults.MEASURE_SECONDS,
        help=f"timed seconds per trial after warmup (default {defaults.MEASURE_SECONDS:g})",
    )
    s.add_argument(
        "--timeout-per-trial",
        type=float,
        default=defaults.TIMEOUT_S,
        metavar="SECONDS",
        help=f"kill a trial's process group after this long (default {defaults.TIMEOUT_S:g})",
    )
    s.add_argument(
        "--memory-limit",
        type=parse_size,
        metavar="SIZE",
        help="cap each trial process's memory (RLIMIT_DATA), e.g. 2G; over it is OOM (pruned)",
    )
    s.add_argument("--seed", type=int, help="sampler seed, for repeatable searches")
    s.add_argument(
        "--sampler",
        choices=defaults.SAMPLERS,
        default=defaults.SAMPLER,
        help="search strategy: autotune's (climbs batch size and uniform precision, then "
        "TPE; default), plain TPE, or random",
    )
    s.add_argument(
        "--stop-slower",
        type=float,
        default=defaults.STOP_RATIO,
        metavar="X",
        help="stop a trial after warm-up when it is X times slower than the best feasible "
        f"one so far (pruned as slow: not timed, not evaluated; default {defaults.STOP_RATIO:g}; "
        "0 never stops)",
    )
    s.add_argument("--eval-limit", type=int, help="evaluate accuracy on the first N samples only")
    host_args(s)
    output.add_format(s, "the Pareto set at the end")

    w = sub.add_parser(
        "worker",
        help="join an existing study (e.g. from another host) and run its remaining trials",
        description="Run trials of a study created by `autotune study`, sharing its storage "
        "(e.g. PostgreSQL) with other hosts, until the study's trial budget is used.",
    )
    storage_args(w, study_required=True)
    host_args(w)
    output.add_format(w, "the Pareto set at the end")


def cmd_study(args: argparse.Namespace) -> int:
    from autotune.storage import shown
    from autotune.study_options import StudyOptions
    from autotune.tuner import Tuner
    from search_spaces import load_space_file

    if args.emulate and args.backend != "cpu":
        raise UsageError(f"--emulate {args.emulate} runs on the cpu backend, not {args.backend}")
    opts = StudyOptions(
        model=args.model,
        backend=f"{args.backend}-emulate-{args.emulate}" if args.emulate else args.backend,
        sensitivity_starting_points=not args.no_starting_points,
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
        **host_options(args),
    )
    tuner = Tuner(opts)
    space = tuner.space
    output.tell(
        f"study {opts.name!r}: {opts.model} on {opts.backend}, {len(space.dimensions)} "
        f"dimensions, {space.size():,} configs; feasible = top-1 drop <= "
        f"{opts.max_accuracy_drop:g} points vs fp32"
        + (f", agreement >= {opts.min_agreement:g}%" if opts.min_agreement is not None else "")
        + f"; storage {shown(opts.storage)}"
    )
    return _run_and_summarise(tuner, args.format)


def cmd_worker(args: argparse.Namespace) -> int:
    from autotune.records import read_study
    from autotune.storage import load_study
    from autotune.study_options import StudyOptions
    from autotune.tuner import Tuner

    host = host_options(args)
    record = read_study(load_study(args.storage, args.study_name))
    if record is None or not record.made_by_tuner:
        raise UsageError(f"study {args.study_name!r} was not created by autotune study")
    tuner = Tuner(StudyOptions.from_study(record, **host), join_existing=True)
    output.tell(
        f"joined study {args.study_name!r}: budget {tuner.budget} trials, "
        f"{tuner.budget_used()} done"
    )
    return _run_and_summarise(tuner, args.format)


def _run_and_summarise(tuner: Any, fmt: str) -> int:
    from autotune.analysis import best_feasible, pareto_front, reference_recipe_row, trial_rows
    from autotune.cli import views

    # One line each: trials sharing this host's cores, CPU trials on different machines.
    said = [m for m in (tuner.jobs_note(), tuner.machine_warning()) if m is not None]
    for line in said:
        output.say(line)
    tuner.run()
    late = tuner.machine_warning()  # another host may have joined meanwhile
    if late is not None and late not in said:
        output.say(late)
    rows = trial_rows(tuner.study)
    summary = (
        tuner.opts.name,
        rows,
        pareto_front(rows),
        reference_recipe_row(tuner.study, rows),
        best_feasible(rows),
    )
    if fmt == "json":
        output.data_json(views.pareto_json(*summary))
    else:
        output.data(views.pareto_table(*summary))
    return 0
