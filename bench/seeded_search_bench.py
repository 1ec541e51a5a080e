"""Benchmark: sensitivity-seeded dtype-map search vs plain TPE, same budget and seed.

    python bench/seeded_search_bench.py [--model mnist_transformer] [--trials 30] [--seed 0]

Both studies run on the TT-emulating CPU backend (exact tt-metal weight rounding) with the
non-dtype knobs fixed (eager, batch 256), so only the dtype-map search differs. Reported per
study: the trial at which the first feasible config with at least --target of the linear
weights' parameters at bfp_bf8/bfp_bf4 appeared, and the largest such share among feasible
trials within the budget. The sensitivity pass is computed once (cached) and its cost is
reported separately.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from fnmatch import fnmatchcase
from pathlib import Path

from autotune.runner import RunnerSettings
from autotune.sensitivity import layer_sensitivity
from autotune.tuner import StudyOptions, Tuner

FIXED = {"batch_size": {"min": 256, "max": 256}, "optimization_level": [0]}


def lowered_share(config: dict, sizes: dict[str, int]) -> float:
    """Share of linear-weight parameters stored in a block-float format."""
    low = 0
    for name, size in sizes.items():
        dtype = next((d for g, d in config["weight_dtypes"].items() if fnmatchcase(name, g)), "")
        low += size if dtype.startswith("bfp") else 0
    return low / sum(sizes.values())


def weight_sizes(model: str) -> dict[str, int]:
    from studies import get_study

    study = get_study(model)
    params = dict(study.build_model().named_parameters())
    return {w.name: params[w.name].numel() for w in study.weights if w.kind == "linear"}


def run(model: str, trials: int, seed: int, seeded: bool, storage: str, cache: Path) -> dict:
    opts = StudyOptions(
        model=model,
        backend="cpu-emulate-tt",
        trials=trials,
        space=FIXED,
        measure_seconds=0.2,
        seed=seed,
        seed_from_sensitivity=seeded,
        storage=storage,
        study_name=f"{model}-{'seeded' if seeded else 'plain'}",
        cache_dir=cache,
        progress=False,
    )
    start = time.perf_counter()
    tuner = Tuner(opts)
    tuner.run()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "trials": tuner.study.get_trials()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist_transformer")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=0.75, help="share of weights lowered")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    sizes = weight_sizes(args.model)
    out: dict = {
        "model": args.model,
        "trials": args.trials,
        "seed": args.seed,
        "target_share": args.target,
    }
    with tempfile.TemporaryDirectory() as tmp:
        storage, cache = f"sqlite:///{tmp}/bench.db", Path(tmp) / "cache"
        start = time.perf_counter()
        layer_sensitivity(args.model, storage, RunnerSettings(cache_dir=cache), cache)
        out["sensitivity_s"] = time.perf_counter() - start
        for seeded in (True, False):
            res = run(args.model, args.trials, args.seed, seeded, storage, cache)
            first, best_share, feasible = None, 0.0, 0
            for t in res["trials"]:
                ok = t.state.name == "COMPLETE" and all(v <= 0 for v in t.constraints.values())
                if not ok:
                    continue
                feasible += 1
                share = lowered_share(t.user_attrs["config"], sizes)
                best_share = max(best_share, share)
                if first is None and share >= args.target:
                    first = t.number + 1
            out["seeded" if seeded else "plain_tpe"] = {
                "first_trial_reaching_target": first,
                "best_feasible_share": best_share,
                "feasible_trials": feasible,
                "wall_s": res["wall_s"],
            }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
