"""autotune's pick against what a CPU user would pick instead: OpenVINO's THROUGHPUT hint.

    python bench/vs_openvino.py [--model mnist] [--export best.json | --trials 50]
        [--rounds 3] [--seconds 4] [--ov-batches 64,256,1024] [--json OUT]

Three contenders, the same model on the same machine, host input in and output to host:

- **OpenVINO, THROUGHPUT hint**: `openvino.convert_model` of the fp32 model, compiled for the
  CPU with ``PERFORMANCE_HINT=THROUGHPUT`` (OpenVINO picks streams, requests and precision:
  bf16 where the CPU has it), fed by an ``AsyncInferQueue`` of its optimal request count; each
  output is copied to a host array. Its best batch is found first (one run per batch).
- **autotune's pick**: the export of a study (`--export`, or a fresh `--trials` study), applied
  with `autotune.apply_config` and run on the exported streams, each a loop on its own
  batches (`autotune.backends.streams.run_streams`): the documented user path, in a process
  of its own, not the trial process.
- **the seed's recipe on the CPU**: fp32 eager at batch 64, one loop.

Each measurement is a fresh process (nothing warm is shared), and the rounds interleave the
three, so a drift of the machine hits all alike. Reports each one's median samples/s over
the rounds and the ratios. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker_openvino(model: str, batch: int, seconds: float) -> dict:
    import numpy as np
    import openvino as ov
    import torch

    from studies import get_study

    study = get_study(model)
    net = study.build_model().eval()
    x = study.example_input(batch)
    example = x if not isinstance(x, dict) else tuple(x.values())
    with torch.no_grad():
        converted = ov.convert_model(net, example_input=example)
    core = ov.Core()
    compiled = core.compile_model(converted, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    feed = [t.numpy() for t in (example if isinstance(example, tuple) else (example,))]
    queue = ov.AsyncInferQueue(compiled, requests)
    done = [0]

    def copied(request, _):
        np.copy(request.get_output_tensor(0).data)
        done[0] += 1

    queue.set_callback(copied)

    def run_for(s: float) -> float:
        done[0] = 0
        start = time.perf_counter()
        while time.perf_counter() - start < s:
            queue.start_async(feed)
        queue.wait_all()
        return done[0] * batch / (time.perf_counter() - start)

    run_for(seconds / 2)  # warm-up
    return {
        "samples_per_s": run_for(seconds),
        "batch_size": batch,
        "streams": int(compiled.get_property("NUM_STREAMS")),
        "requests": int(requests),
        "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
        "openvino": ov.__version__,
    }


def worker_autotune(model: str, export: str, seconds: float) -> dict:
    import torch

    from autotune import apply_config, load_config, pytree
    from autotune.backends import get_backend
    from autotune.backends.streams import STREAMS_NAME, run_streams
    from studies import get_study

    config = load_config(export)
    backend = get_backend(config.backend)
    study = get_study(model)
    streams = config.knob_map.get(STREAMS_NAME, 1)
    torch.set_grad_enabled(False)  # inference only (each stream's thread does the same)
    run = apply_config(study.build_model(), export)

    def infer(x):
        y = pytree.call(run, pytree.tree_map(lambda t: backend.to_device(t, config), x))
        return pytree.tree_map(lambda t: t.to("cpu"), y)

    batches = [study.example_input(config.batch_size) for _ in range(streams)]
    infer(batches[0])  # compiles, in this thread (with the stream's thread count)
    steps = [lambda b=b: infer(b) for b in batches]
    threads = torch.get_num_threads()  # one stream's share, as apply_config set it

    def run_for(s: float) -> float:
        start = time.perf_counter()
        end = start + s
        if streams == 1:  # the plain loop in this thread, as the trial timed it
            n = 0
            while time.perf_counter() < end:
                steps[0]()
                n += 1
            return n * config.batch_size / (time.perf_counter() - start)
        times = run_streams(steps, threads, 1, lambda _: time.perf_counter() >= end)
        return sum(len(b) for b in times.blocks) * config.batch_size / (time.perf_counter() - start)

    run_for(seconds / 2)
    return {"samples_per_s": run_for(seconds), "config": config.to_dict()}


def worker_seed(model: str, seconds: float) -> dict:
    import torch

    from studies import get_study

    study = get_study(model)
    net = study.build_model().eval()
    x = study.example_input(64)
    from autotune import pytree

    with torch.no_grad():

        def step() -> None:
            pytree.tree_map(lambda t: t.to("cpu"), pytree.call(net, x))

        end = time.perf_counter() + seconds / 2
        while time.perf_counter() < end:
            step()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step()
            n += 1
    return {"samples_per_s": n * 64 / (time.perf_counter() - start), "batch_size": 64}


def _run_worker(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"worker {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _study_export(model: str, trials: int, workdir: Path) -> tuple[Path, float]:
    db = f"sqlite:///{workdir / 'study.db'}"
    cli = [sys.executable, "-m", "autotune"]
    start = time.perf_counter()
    subprocess.run(
        [*cli, "study", "--model", model, "--trials", str(trials), "--storage", db,
         "--study-name", "vs-openvino"],
        check=True,
        cwd=ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - start
    out = workdir / "best.json"
    subprocess.run(
        [*cli, "export", "--storage", db, "--study", "vs-openvino", "-o", str(out)],
        check=True,
        cwd=ROOT,
    )
    return out, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--export", help="autotune's pick (default: run a study first)")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--ov-batches", default="64,256,1024")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from autotune.host import cpu_model

    workdir = Path(tempfile.mkdtemp(prefix="vs-openvino-"))
    study_wall = None
    export = Path(args.export) if args.export else None
    if export is None:
        export, study_wall = _study_export(args.model, args.trials, workdir)
    pick = json.loads(export.read_text())

    secs = str(args.seconds)
    sweep = {
        int(b): _run_worker("openvino", args.model, b, secs)["samples_per_s"]
        for b in args.ov_batches.split(",")
    }
    ov_batch = max(sweep, key=sweep.get)
    print(f"OpenVINO THROUGHPUT sweep: {', '.join(f'bs{b} {v:,.0f}' for b, v in sweep.items())}")

    results: dict[str, list[dict]] = {"openvino": [], "autotune": [], "seed": []}
    for r in range(args.rounds):
        order = ["openvino", "autotune", "seed"]
        if r % 2:
            order.reverse()  # ABC CBA ...: no contender always runs first
        for name in order:
            if name == "openvino":
                res = _run_worker("openvino", args.model, str(ov_batch), secs)
            elif name == "autotune":
                res = _run_worker("autotune", args.model, str(export), secs)
            else:
                res = _run_worker("seed", args.model, secs)
            results[name].append(res)
            print(f"round {r + 1} {name}: {res['samples_per_s']:,.0f} samples/s")

    med = {k: statistics.median(x["samples_per_s"] for x in v) for k, v in results.items()}
    summary = {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "model": args.model,
        "study_wall_s": study_wall,
        "pick": {
            k: pick.get(k)
            for k in ("batch_size", "optimization_level", "activation_dtype", "knobs")
        },
        "openvino_sweep": sweep,
        "openvino": results["openvino"][-1] | {"samples_per_s": med["openvino"]},
        "median_samples_per_s": med,
        "ratio_autotune_vs_openvino": med["autotune"] / med["openvino"],
        "ratio_autotune_vs_seed": med["autotune"] / med["seed"],
        "rounds": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *rest = sys.argv[2:]
        fn = {"openvino": worker_openvino, "autotune": worker_autotune, "seed": worker_seed}
        if kind == "openvino":
            out = fn[kind](rest[0], int(rest[1]), float(rest[2]))
        elif kind == "autotune":
            out = fn[kind](rest[0], rest[1], float(rest[2]))
        else:
            out = fn[kind](rest[0], float(rest[1]))
        print(json.dumps(out, default=str))
    else:
        main()
