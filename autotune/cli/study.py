"""`autotune study` (create or resume a study) and `autotune worker` (join it from another host)."""

from __future__ import annotations

import argparse
from typing import Any

from autotune.cli import output
from autotune.cli.common import EPILOG, add_options, host_options, options_given, storage_args
from autotune.errors import UsageError
from autotune.study_options import HOST, STUDY


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "study",
        help="run (or resume) a tuning study",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    beside = {"backend": _emulate_arg, "trials": lambda p: storage_args(p, study_required=False)}
    add_options(s, STUDY, after=beside)
    add_options(s, HOST)
    output.add_format(s, "the Pareto set at the end")

    w = sub.add_parser(
        "worker",
        help="join an existing study (e.g. from another host) and run its remaining trials",
        description="Run trials of a study created by `autotune study`, sharing its storage "
        "(e.g. PostgreSQL) with other hosts, until the study's trial budget is used.",
    )
    storage_args(w, study_required=True)
    add_options(w, HOST)
    output.add_format(w, "the Pareto set at the end")


def _emulate_arg(p: argparse.ArgumentParser) -> None:
    # Not an option of its own: it names the backend (cpu -> cpu-emulate-tt, in cmd_study).
    p.add_argument(
        "--emulate",
        choices=["tt"],
        help="run Tenstorrent weight numerics (bf16/bfp_bf8/bfp_bf4) exactly on "
        "this CPU: accuracy as on the card, throughput of the CPU",
    )


def cmd_study(args: argparse.Namespace) -> int:
    from autotune.storage import shown
    from autotune.study_options import StudyOptions
    from autotune.tuner import Tuner
    from search_spaces import load_space_file
    from studies import get_study

    if args.emulate and args.backend != "cpu":
        raise UsageError(f"--emulate {args.emulate} runs on the cpu backend, not {args.backend}")
    converted = {  # the two flags whose value is not the option's own
        "backend": f"{args.backend}-emulate-{args.emulate}" if args.emulate else args.backend,
        "space": load_space_file(args.space) if args.space else None,
    }
    opts = StudyOptions(**options_given(args, STUDY) | converted | host_options(args))
    tuner = Tuner(opts, say=_say_beside_bar)
    space = tuner.space
    output.tell(f"model {opts.model}: {tuner.model.summary()}")
    for note in get_study(opts.model).notes():
        output.tell(note)
    if not tuner.model.labels and get_study(opts.model).metric is None:
        output.tell("no labels: the metric is fidelity against fp32 (PCC of the scored output)")
    output.tell(
        f"study {opts.name!r}: {opts.model} on {opts.backend}, {len(space.dimensions)} "
        f"dimensions, {space.size():,} configs; feasible = {tuner.record.feasible_text}"
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
    tuner = Tuner(StudyOptions.from_study(record, **host), join_existing=True, say=_say_beside_bar)
    output.tell(
        f"joined study {args.study_name!r}: budget {tuner.budget} trials, "
        f"{tuner.budget_used()} done"
    )
    return _run_and_summarise(tuner, args.format)


def _say_beside_bar(line: str) -> None:
    """A line of talk while the progress bar runs: above it, not through it."""
    import sys

    from tqdm import tqdm

    tqdm.write(f"autotune: {line}", file=sys.stderr)


def _run_and_summarise(tuner: Any, fmt: str) -> int:
    from autotune.analysis import best_feasible, pareto_front, reference_recipe_row, trial_rows
    from autotune.cli import views

    # One line each: trials sharing this host's cores, CPU trials on different machines.
    said = [m for m in (tuner.jobs_note(), tuner.machine_warning()) if m is not None]
    said += [f"warning: {w}" for w in tuner.space.warnings()]  # risky choices a space file named
    if tuner.backend.emulation_note:
        said.append(tuner.backend.emulation_note)
    said += tuner.backend.start_notes
    for line in said:
        output.say(line)
    tuner.run()
    if tuner.ledger.search_done:
        output.say(
            f"the search had nothing left worth compiling after {tuner.budget_used()} of "
            f"{tuner.budget} trials; the rest of the budget went to deciding the pick"
        )
    if tuner.conclusion:
        output.say(tuner.conclusion)
    from autotune.fidelity_verdict import study_verdict

    verdict = study_verdict(tuner.study)
    if verdict is not None:
        output.say(verdict.summary())
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
        output.data(views.pareto_table(*summary, tuner.record.metric))
    return 0
