"""`autotune study` (create or resume a study) and `autotune worker` (join it from another host)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
        **host_options(args),
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

    host = host_options(args)
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

