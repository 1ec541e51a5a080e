"""Exports for Tenstorrent studies: tt-xla's mixed-precision map and a runnable script.

Studies are built the way the tuner stores them (a finished trial with the record the tuner
writes, the constraint, the study record) in a temporary SQLite file. The
script and the map are run against the tt-xla stand-in (``tests/tt_standin``): no card here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from autotune import cli
from autotune.backends import tt_recipe
from autotune.backends.tt import TTBackend
from autotune.backends.tt_export import mixed_precision_map, runnable_script
from autotune.errors import UsageError
from autotune.export import export_dict, render
from autotune.records import StudyRecord, TrialRecord, finished_trial, write_study
from autotune.wire import TrialConfig
from tests.test_tt_backend import (
    ROOT,
    STANDIN,
    STANDIN_ENV,
    expected_calls,
    reference,  # noqa: F401 - the fixture, for getfixturevalue
    run_tt,
    use_standin,
)

MAX_DROP = 0.5
TT_CONFIG = TrialConfig(
    model="mnist",
    backend="tt",
    batch_size=16,
    optimization_level=2,
    trace=True,
    activation_dtype="bf16",
    weight_dtypes=(("fc1.weight", "bfp_bf8"), ("fc2.weight", "bf16")),
    knobs=(("experimental_weight_dtype", "none"),),
)


def make_study(tmp_path: Path, config: TrialConfig, name: str = "mnist-tt") -> str:
    """A stored study with one feasible measured trial of `config`; returns the storage URL."""
    url = f"sqlite:///{tmp_path / 'autotune.db'}"
    study = optuna.create_study(
        storage=url, study_name=name, directions=["maximize", "minimize"], load_if_exists=True
    )
    options = {"model": "mnist", "backend": config.backend, "max_accuracy_drop": MAX_DROP}
    write_study(study, StudyRecord(options=options))
    metrics = {
        "throughput_samples_per_s": 12345.0,
        "throughput_iqr": 10.0,
        "latency_ms_p50": 1.3,
        "latency_ms_p95": 1.4,
        "accuracy": 0.99,
        "metric_drop": 0.02,
        "agreement": 0.999,
        "pcc": 0.9999,
        "max_abs_error": 0.3,
        "batch_size": config.batch_size,
    }
    record = TrialRecord(
        config=config.to_dict(),
        config_key=config.key(),
        status="ok",
        message="",
        metrics=metrics,
        timings={"trial_s": 3.0},
        environment={"device": "TT wormhole_b0", "versions": {"torch": "x"}},
    )
    study.add_trial(
        finished_trial(
            record,
            values=[metrics["throughput_samples_per_s"], metrics["metric_drop"]],
            constraints={"metric_drop": metrics["metric_drop"] - MAX_DROP},
        )
    )
    return url


@pytest.fixture(autouse=True)
def _keep_sigterm_handler():
    """`cli.main` installs a SIGTERM handler; put pytest's back afterwards."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture
def tt_export(tmp_path: Path) -> dict:
    return export_dict(
        optuna.load_study(study_name="mnist-tt", storage=make_study(tmp_path, TT_CONFIG))
    )


def standin_env(log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STANDIN_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(STANDIN)])
    env["TT_STANDIN_LOG"] = str(log)
    return env


def test_json_export_carries_the_exact_tt_options(tt_export):
    assert tt_export["backend"] == "tt"
    assert tt_export["compile_options"] == {"optimization_level": "2", "enable_trace": "true"}
    assert tt_export["env"] == {"TT_RUNTIME_TRACE_REGION_SIZE": "10000000"}
    assert tt_export["weight_dtype_overrides"] == {"fc1.weight": "bfp_bf8", "fc2.weight": "bf16"}
    assert json.loads(render(tt_export, "json")) == tt_export


def test_mixed_precision_map_loads_through_apply_weight_dtype_overrides(tt_export, tmp_path):
    mixed = mixed_precision_map(tt_export)
    assert mixed == {"fc1.weight": "bfp_bf8", "fc2.weight": "bf16"}
    path = tmp_path / "mnist_mixed_precision.json"
    path.write_text(render(tt_export, "tt-mixed-precision"))
    assert json.loads(path.read_text()) == mixed
    code = (
        "import json, sys, torch, tt_torch; from studies import get_study\n"
        "m = get_study('mnist').build_model().eval().to(torch.bfloat16)\n"
        "print(json.dumps(tt_torch.apply_weight_dtype_overrides(m, sys.argv[1])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=standin_env(tmp_path / "calls.jsonl"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [["fc1.weight", "bfp_bf8"], ["fc2.weight", "bf16"]]


def test_script_runs_the_same_recipe_as_the_backend(tmp_path, monkeypatch, request):
    """Written by the CLI, the script compiles, runs against the stand-in, prints samples/s,
    and makes the calls a trial of the same config makes through the real trial process, with the
    same values, in the same order."""
    url = make_study(tmp_path, TT_CONFIG)
    script = tmp_path / "run_best.py"
    args = ["export", "--storage", url, "--study", "mnist-tt", "--format", "script"]
    assert cli.main([*args, "-o", str(script)]) == 0
    text = script.read_text()
    compile(text, str(script), "exec")
    assert os.access(script, os.X_OK)
    assert text.index('os.environ["TT_RUNTIME_TRACE_REGION_SIZE"] = "10000000"') < text.index(
        "import torch_xla"
    )

    log = tmp_path / "calls.jsonl"
    proc = subprocess.run(
        [sys.executable, str(script), "4"],
        capture_output=True,
        text=True,
        env=standin_env(log),
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"Average throughput: \d+ samples/second\n", proc.stdout)
    calls = [json.loads(line) for line in log.read_text().splitlines()]

    def without_imports(records: list[dict]) -> list[dict]:
        return [c for c in records if not c["call"].startswith("import ")]

    expected = expected_calls(TT_CONFIG, "10000000")
    assert calls[0] == expected[0]  # the trace region was set before torch_xla was imported
    assert without_imports(calls[: len(expected)]) == without_imports(expected)
    executions = [c for c in calls if c["call"] == "tt execute"]
    assert len(executions) == 2  # the stand-in records the first two: compile and capture

    # The backend's own trial of the config: the same calls up to the trace capture. (The
    # script imports tt_torch with the other modules; the trial process when it prepares the model.)
    fp32 = request.getfixturevalue("reference")
    result, trial_calls = run_tt(TT_CONFIG, fp32, use_standin(monkeypatch, tmp_path / "t.jsonl"))
    assert result.ok, result.stderr_tail
    assert trial_calls[0] == calls[0]
    n = len(expected)
    assert without_imports(trial_calls[:n]) == without_imports(calls[:n])


def test_script_prints_the_backends_recipe_steps_in_order(tt_export):
    """The script's calls are `tt_recipe`'s steps, the ones TTBackend runs, in their order."""
    text = runnable_script(tt_export)
    steps = [tt_recipe.SELECT_DEVICE, *tt_recipe.PREPARE, tt_recipe.CAST_INPUT]
    at = 0
    for step in steps:
        block = "\n".join(f"    {line}" for line in step.lines())
        assert block in text[at:], block
        at = text.index(block, at) + len(block)
    assert f"output = model({tt_recipe.TO_DEVICE.source})" in text[at:]
    assert "if WEIGHT_DTYPE_OVERRIDES:\n        tt_torch.apply_weight_dtype_overrides(" in text
    for alias, module in tt_recipe.MODULES.items():
        assert f"import {module}" + ("" if alias == module else f" as {alias}") in text


def test_script_without_trace_sets_no_region_and_skips_empty_overrides(tt_export):
    config = TrialConfig(model="mnist", backend="tt", batch_size=32, activation_dtype="bf16")
    backend = TTBackend()
    data = {
        **tt_export,
        "batch_size": 32,
        "weight_dtype_overrides": {},
        "compile_options": backend.compile_options(config),
        "env": backend.trial_env(config),
    }
    text = runnable_script(data, default_loops=7)
    compile(text, "best.py", "exec")
    assert "os.environ[" not in text
    assert "WEIGHT_DTYPE_OVERRIDES = {}" in text
    assert (
        'COMPILE_OPTIONS = {\n    "optimization_level": "0",\n    "enable_trace": "false",\n}'
        in text
    )
    assert "BATCH_SIZE = 32" in text and "DEFAULT_LOOPS = 7" in text


def test_tt_formats_refuse_other_backends(tmp_path, capsys):
    cpu = TrialConfig(model="mnist", backend="cpu", batch_size=64)
    url = make_study(tmp_path, cpu, name="mnist-cpu")
    for fmt in ("tt-mixed-precision", "script"):
        code = cli.main(["export", "--storage", url, "--study", "mnist-cpu", "--format", fmt])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1 and err.startswith(f"autotune: --format {fmt} is for")
    assert cli.main(["export", "--storage", url, "--study", "mnist-cpu"]) == 0  # json is fine
    assert json.loads(capsys.readouterr().out)["backend"] == "cpu"
    cpu_export = export_dict(optuna.load_study(study_name="mnist-cpu", storage=url))
    with pytest.raises(UsageError, match="Tenstorrent"):
        mixed_precision_map(cpu_export)
    with pytest.raises(UsageError, match="Tenstorrent"):
        runnable_script(cpu_export)


def test_mixed_precision_export_notes_a_global_weight_dtype(tmp_path, capsys):
    config = TrialConfig(
        model="mnist",
        backend="tt",
        batch_size=64,
        activation_dtype="bf16",
        weight_dtypes=(("fc1.weight", "bfp_bf4"),),
        knobs=(("experimental_weight_dtype", "bfp_bf8"),),
    )
    url = make_study(tmp_path, config)
    args = ["export", "--storage", url, "--study", "mnist-tt", "--format", "tt-mixed-precision"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"fc1.weight": "bfp_bf4"}
    assert "note: the trial also set the compile option experimental_weight_dtype=bfp_bf8" in (
        captured.err
    )


def test_mixed_precision_rejects_unknown_dtype(tt_export):
    bad = {**tt_export, "weight_dtype_overrides": {"fc1.weight": "fp8"}}
    with pytest.raises(UsageError, match="fp8"):
        mixed_precision_map(bad)


def test_exports_carry_todays_options(tmp_path, capsys):
    """The JSON and the script carry the exact map the trial sent; the mixed-precision map
    cannot, so the export names the options on stderr."""
    config = replace(
        TT_CONFIG,
        knobs=(
            ("experimental_weight_dtype", "none"),
            ("math_fidelity", "hifi2"),
            ("fp32_dest_acc_en", "true"),
            ("experimental_enable_permute_matmul_fusion", "false"),
            ("trace_region_size", 0),
        ),
    )
    url = make_study(tmp_path, config)
    data = export_dict(optuna.load_study(study_name="mnist-tt", storage=url))
    sent = {
        "optimization_level": "2",
        "enable_trace": "true",
        "math_fidelity": "hifi2",
        "fp32_dest_acc_en": "true",
        "experimental_enable_permute_matmul_fusion": "false",
    }
    assert data["compile_options"] == sent
    assert data["env"] == {"TT_RUNTIME_TRACE_REGION_SIZE": "0"}
    text = runnable_script(data)
    assert (
        "COMPILE_OPTIONS = {\n" + "".join(f'    "{k}": "{v}",\n' for k, v in sent.items()) + "}"
        in text
    )
    assert 'os.environ["TT_RUNTIME_TRACE_REGION_SIZE"] = "0"' in text
    args = ["export", "--storage", url, "--study", "mnist-tt", "--format", "tt-mixed-precision"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert (
        "compile options math_fidelity=hifi2, fp32_dest_acc_en=true, "
        "experimental_enable_permute_matmul_fusion=false, which a weight map cannot carry"
    ) in err
