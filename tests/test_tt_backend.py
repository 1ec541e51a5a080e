"""The Tenstorrent backend: the calls it makes, in order, and how its failures are classified.

There is no Tenstorrent card here. Trials run the REAL trial process
(``autotune.launch.runner.run_job``)
against the stand-in packages in ``tests/tt_standin`` (put on the trial process's PYTHONPATH), which
record every tt-xla call with its arguments; the tests assert that record. The one test that
needs a card (``-m tt``) is skipped, visibly, without one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autotune.backends import get_backend
from autotune.backends.tt import TTBackend
from autotune.backends.tt_options import DEFAULT_TRACE_REGION_SIZE
from autotune.launch.runner import RunnerSettings, run_job
from autotune.wire import Status, TrialConfig, TrialJob, TrialResult
from search_spaces import SpaceError, default_space
from studies import get_study

ROOT = Path(__file__).resolve().parent.parent
STANDIN = Path(__file__).resolve().parent / "tt_standin"
STANDIN_DEVICE = "TT stand-in (CPU, no Tenstorrent card)"
EVAL_LIMIT = 128
STANDIN_ENV = (
    "TT_STANDIN_LOG",
    "TT_STANDIN_FAIL",
    "TT_STANDIN_FAIL_UNLESS_TRACE_REGION_AT_LEAST",
    "TT_RUNTIME_TRACE_REGION_SIZE",
)


def tt_config(**kw: Any) -> TrialConfig:
    base: dict[str, Any] = {
        "model": "mnist",
        "backend": "tt",
        "batch_size": 8,
        "activation_dtype": "bf16",
    }
    return TrialConfig(**{**base, **kw})


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float]:
    """The fp32 reference outputs, made as the tuner makes them (a CPU "reference" job)."""
    from autotune.jobs import fp32_reference

    cache = tmp_path_factory.mktemp("tt-reference")
    ref = fp32_reference("mnist", EVAL_LIMIT, RunnerSettings(timeout_s=120), cache)
    return str(ref.path), ref.metric_value


def use_standin(mp: pytest.MonkeyPatch, log: Path) -> Path:
    """Put the stand-in on the trial process's PYTHONPATH, logging to `log`; no injected failure."""
    for name in STANDIN_ENV:
        mp.delenv(name, raising=False)
    paths = [str(STANDIN), os.environ.get("PYTHONPATH", "")]
    mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    mp.setenv("TT_STANDIN_LOG", str(log))
    return log


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The stand-in for one test; returns the call log's path."""
    return use_standin(monkeypatch, tmp_path / "calls.jsonl")


def read_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_tt(
    config: TrialConfig, reference: tuple[str, float], log: Path
) -> tuple[TrialResult, list]:
    job = TrialJob(
        config,
        measure_seconds=0.05,
        warmup_iters=3,
        warmup_seconds=0.0,
        min_blocks=2,
        reference_path=reference[0],
        reference_metric=reference[1],
        eval_limit=EVAL_LIMIT,
    )
    result = run_job(job, RunnerSettings(timeout_s=120))
    return result, read_calls(log)


def expected_calls(config: TrialConfig, trace_region: str | None) -> list[dict[str, Any]]:
    """What tt-xla must see, in order, up to the 2nd execution (the trace capture)."""
    backend = TTBackend()
    options = backend.compile_options(config)
    # As tt-xla's CompileOptions::parse reads them: std::stoi, parseBoolOption, strings.
    parsed = {
        k: {"true": True, "false": False}.get(v, v) if k in BOOL_OPTIONS else v
        for k, v in options.items()
    }
    parsed["optimization_level"] = config.optimization_level
    overrides = config.weight_dtype_map
    calls: list[dict[str, Any]] = [
        {"call": "import torch_xla", "trace_region_size": trace_region},
        {"call": "xr.set_device_type", "device_type": "TT"},
        {"call": "import tt_torch"},
    ]
    if overrides:
        calls.append(
            {
                "call": "tt_torch.apply_weight_dtype_overrides",
                "config": overrides,
                "applied": [list(item) for item in overrides.items()],
                "model_training": False,
                "model_param_dtypes": ["torch.bfloat16"],
                "model_compiled": False,
                "emulation": "autotune.numerics.round_bfp",
            }
        )
    calls += [
        {"call": "torch_xla.set_custom_compile_options", "options": options, "parsed": parsed},
        {"call": "model.compile", "args": [], "kwargs": {"backend": "tt"}},
        {"call": "xm.xla_device", "n": None, "device_type": "TT"},
        {"call": "model.to(device)"},
        # The bf16 input is made once, before the timed loop (mnist_performant.py builds it
        # once); each iteration then moves it to the device and the output back.
        CAST_INPUT,
        TO_DEVICE,
        {
            "call": "tt backend compile",
            "compile_options": options,
            "device_type": "TT",
            "weight_dtype_overrides_in_graph": sorted(overrides.values()),
            "kwargs": {},
        },
        {"call": "tt execute", "execution": 1, "input_dtypes": ["torch.bfloat16"]},
        TO_HOST,
        TO_DEVICE,
        {"call": "tt execute", "execution": 2, "input_dtypes": ["torch.bfloat16"]},
        TO_HOST,
    ]
    return calls


BOOL_OPTIONS = (
    "enable_trace",
    "fp32_dest_acc_en",
    "experimental_enable_permute_matmul_fusion",
    "experimental-enable-dram-space-saving-optimization",
)
CAST_INPUT = {"call": "tensor.to", "to": "torch.bfloat16", "dtype": "torch.float32"}
TO_DEVICE = {"call": "tensor.to", "to": "device", "dtype": "torch.bfloat16"}
TO_HOST = {"call": "tensor.to", "to": "cpu", "dtype": "torch.bfloat16"}


# --- the recipe, end to end through the real trial process ---------------------------------

RECIPES = {
    "level0-notrace-bf16": (
        tt_config(weight_dtypes=(("fc1.weight", "bf16"), ("fc2.weight", "bf16"))),
        None,
    ),
    "level1-trace-mixed": (
        tt_config(
            optimization_level=1,
            trace=True,
            weight_dtypes=(("fc1.weight", "bfp_bf4"), ("fc2.weight", "bfp_bf8")),
            knobs=(("experimental_weight_dtype", "none"),),
        ),
        "10000000",
    ),
    "level2-trace-global-bfp8-region": (
        tt_config(
            optimization_level=2,
            trace=True,
            batch_size=16,
            knobs=(("experimental_weight_dtype", "bfp_bf8"), ("trace_region_size", 33554432)),
        ),
        "33554432",
    ),
    # Today's tt-xla options, each off its default, and the automatic trace region.
    "level2-trace-lofi-options-auto-region": (
        tt_config(
            optimization_level=2,
            trace=True,
            weight_dtypes=(("fc1.weight", "bfp_bf8"), ("fc2.weight", "bf16")),
            knobs=(
                ("experimental_weight_dtype", "none"),
                ("math_fidelity", "lofi"),
                ("fp32_dest_acc_en", "true"),
                ("experimental_enable_permute_matmul_fusion", "false"),
                ("experimental-enable-dram-space-saving-optimization", "true"),
                ("trace_region_size", 0),
            ),
        ),
        "0",
    ),
}


@pytest.fixture(scope="module")
def recipe_runs(reference, tmp_path_factory) -> dict[str, tuple[TrialResult, list]]:
    """Each recipe run once through the real trial process (the tests below read the results)."""
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, (config, _) in RECIPES.items():
            log = use_standin(mp, tmp_path_factory.mktemp("tt-recipe") / "calls.jsonl")
            runs[name] = run_tt(config, reference, log)
    return runs


@pytest.mark.parametrize("name", list(RECIPES))
def test_trial_makes_tt_xla_calls_in_order(name, recipe_runs):
    config, trace_region = RECIPES[name]
    result, calls = recipe_runs[name]
    assert result.status is Status.OK, result.stderr_tail
    expected = expected_calls(config, trace_region)
    assert calls[: len(expected)] == expected
    # Then the rest of warmup and the timed blocks: input to device, output to host, waits
    # at block ends; no cast. Then the eval set's batches, and the device name.
    rest = calls[len(expected) :]
    last_wait = max(i for i, c in enumerate(rest) if c["call"] == "xm.wait_device_ops")
    timed, after = rest[: last_wait + 1], rest[last_wait + 1 :]
    waits = [c for c in timed if c["call"] == "xm.wait_device_ops"]
    assert len(waits) >= 3  # after warmup, and at the end of each of >= 2 timed blocks
    moves = [c for c in timed if c["call"] != "xm.wait_device_ops"]
    assert moves == [TO_DEVICE, TO_HOST] * (len(moves) // 2)
    assert [c["call"] for c in after if c["call"] != "tensor.to"] == [
        "xm.xla_device_hw",
        "xr.global_runtime_device_attributes",
    ]
    # What the trial reports: measured, accuracy against fp32, an honest device name.
    assert result.metrics["throughput_samples_per_s"] > 0
    assert result.metrics["batch_size"] == config.batch_size
    assert result.metrics["agreement"] > 0.95 and result.metrics["pcc"] > 0.99
    env = result.environment
    assert env["device"] == STANDIN_DEVICE
    assert env["versions"]["torch_xla"] == "0.0+standin"
    assert "pjrt-plugin-tt" not in env["versions"]
    assert env["env"].get("TT_RUNTIME_TRACE_REGION_SIZE") == trace_region


def test_todays_options_reach_tt_xla_as_it_parses_them(recipe_runs):
    """Each new option arrives spelled and valued as tt-xla's CompileOptions::parse reads it
    (compile_options.cc at 95c1c1ce), in the options the "tt" compile sees too."""
    result, calls = recipe_runs["level2-trace-lofi-options-auto-region"]
    assert result.status is Status.OK, result.stderr_tail
    (sent,) = [c for c in calls if c["call"] == "torch_xla.set_custom_compile_options"]
    assert sent["options"] == {
        "optimization_level": "2",
        "enable_trace": "true",
        "math_fidelity": "lofi",
        "fp32_dest_acc_en": "true",
        "experimental_enable_permute_matmul_fusion": "false",
        "experimental-enable-dram-space-saving-optimization": "true",
    }
    assert sent["parsed"]["fp32_dest_acc_en"] is True
    assert sent["parsed"]["experimental_enable_permute_matmul_fusion"] is False
    (compiled,) = [c for c in calls if c["call"] == "tt backend compile"]
    assert compiled["compile_options"] == sent["options"]
    # trace_region_size 0 = allocated as needed (tt-mlir #7426), set before torch_xla loads
    assert calls[0] == {"call": "import torch_xla", "trace_region_size": "0"}


def test_block_float_weights_change_the_outputs(recipe_runs):
    """The stand-in emulates the values the card stores: bfp_bf4/bfp_bf8 weights move the
    outputs further from fp32 than bf16 weights do (the stand-in computes in bf16 either way)."""
    bf16 = recipe_runs["level0-notrace-bf16"][0].metrics
    mixed = recipe_runs["level1-trace-mixed"][0].metrics
    assert mixed["mean_abs_error"] > 1.5 * bf16["mean_abs_error"]
    assert mixed["max_abs_error"] > bf16["max_abs_error"]


# --- failures: the runtime's stderr decides the status --------------------------------------

FAILURES = {
    "oom": (Status.OOM, "Out of Memory: Not enough space to allocate"),
    "compile": (Status.COMPILE_ERROR, "Failed to run TTIRToTTNNCommon pipeline"),
    "crash": (Status.CRASH, "unexpected value from the completion queue"),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_failure_classified_from_trial_process_stderr(kind, reference, standin, monkeypatch):
    status, text = FAILURES[kind]
    monkeypatch.setenv("TT_STANDIN_FAIL", kind)
    result, calls = run_tt(tt_config(), reference, standin)
    assert result.status is status
    assert result.message == "RuntimeError: Error code: 13"  # all Python ever sees
    assert text in result.stderr_tail and "Error code: 13" in result.stderr_tail
    # Compile errors and OOM surface at the first execution (where the program compiles).
    assert [c for c in calls if c["call"] == "standin.fail"] == [
        {"call": "standin.fail", "kind": kind, "execution": 1}
    ]


def test_trace_region_error_then_retry_with_larger_region(reference, standin, monkeypatch):
    """A trace that does not fit is TRACE_ERROR; rerun with `with_larger_trace_region`, it fits."""
    monkeypatch.setenv("TT_STANDIN_FAIL", "trace_region")
    monkeypatch.setenv("TT_STANDIN_FAIL_UNLESS_TRACE_REGION_AT_LEAST", "20000000")
    backend = TTBackend()
    config = tt_config(trace=True, optimization_level=2)
    first, calls = run_tt(config, reference, standin)
    assert first.status is Status.TRACE_ERROR
    assert first.message == "RuntimeError: Error code: 13"
    assert "but only 10000000B is allocated for trace region" in first.stderr_tail
    assert calls[0] == {"call": "import torch_xla", "trace_region_size": "10000000"}
    # At the second execution: the one that captures the trace.
    assert [c for c in calls if c["call"] == "standin.fail"] == [
        {"call": "standin.fail", "kind": "trace_region", "execution": 2}
    ]

    retry = backend.with_larger_trace_region(config, first.stderr_tail)
    assert retry is not None
    assert retry.knob_map["trace_region_size"] == 4 * DEFAULT_TRACE_REGION_SIZE
    standin.unlink()
    second, calls = run_tt(retry, reference, standin)
    assert second.status is Status.OK, second.stderr_tail
    assert calls[0] == {"call": "import torch_xla", "trace_region_size": "40000000"}
    assert backend.with_larger_trace_region(retry, first.stderr_tail) is None  # once only


# --- tuner-side units (classification and the rest of the contract: test_backend_contract.py)


def test_compile_options_and_env():
    tt = get_backend("tt")
    assert isinstance(tt, TTBackend)
    assert tt.visible_devices_env == "TT_METAL_VISIBLE_DEVICES"  # one chip per trial (--devices)
    assert tt.trial_env(tt_config()) == {}
    on = tt_config(optimization_level=2, trace=True, knobs=(("experimental_weight_dtype", "none"),))
    assert tt.compile_options(on) == {"optimization_level": "2", "enable_trace": "true"}
    assert tt.trial_env(on) == {"TT_RUNTIME_TRACE_REGION_SIZE": "10000000"}
    glob = tt_config(optimization_level=1, knobs=(("experimental_weight_dtype", "bfp_bf4"),))
    assert tt.compile_options(glob) == {
        "optimization_level": "1",
        "enable_trace": "false",
        "experimental_weight_dtype": "bfp_bf4",
    }
    sized = tt_config(trace=True, knobs=(("trace_region_size", 12345678),))
    assert tt.trial_env(sized) == {"TT_RUNTIME_TRACE_REGION_SIZE": "12345678"}
    auto = tt_config(trace=True, knobs=(("trace_region_size", 0),))
    assert tt.trial_env(auto) == {"TT_RUNTIME_TRACE_REGION_SIZE": "0"}
    for bad in ("big", -1, True):
        with pytest.raises(ValueError, match="trace_region_size"):
            tt.trial_env(tt_config(trace=True, knobs=(("trace_region_size", bad),)))
    # Options at tt-xla's default are not sent (as its compiler_config.py does); unset
    # fp32_dest_acc_en is not sent; a fidelity is always sent when the config names one.
    defaults = tt_config(
        knobs=(
            ("math_fidelity", "hifi4"),
            ("fp32_dest_acc_en", "unset"),
            ("experimental_enable_permute_matmul_fusion", "true"),
            ("experimental-enable-dram-space-saving-optimization", "false"),
        )
    )
    assert tt.compile_options(defaults) == {
        "optimization_level": "0",
        "enable_trace": "false",
        "math_fidelity": "hifi4",
    }
    off = tt_config(knobs=(("math_fidelity", "ttnn_default"), ("fp32_dest_acc_en", "false")))
    assert tt.compile_options(off) == {
        "optimization_level": "0",
        "enable_trace": "false",
        "math_fidelity": "ttnn_default",
        "fp32_dest_acc_en": "false",
    }


def test_with_larger_trace_region():
    tt = TTBackend()
    assert tt.with_larger_trace_region(tt_config(trace=False)) is None
    config = tt_config(trace=True, batch_size=64)
    retry = tt.with_larger_trace_region(config)
    assert retry == tt_config(trace=True, batch_size=64, knobs=(("trace_region_size", 40_000_000),))
    assert tt.with_larger_trace_region(retry) is None
    # The searched sizes are retried once, the automatic one (0) from the default size; a
    # size set by hand is not.
    auto = tt_config(trace=True, batch_size=64, knobs=(("trace_region_size", 0),))
    assert tt.with_larger_trace_region(auto).knob_map["trace_region_size"] == 40_000_000
    fixed = tt_config(trace=True, batch_size=64, knobs=(("trace_region_size", 10_000_000),))
    assert tt.with_larger_trace_region(fixed).knob_map["trace_region_size"] == 40_000_000
    hand = tt_config(trace=True, knobs=(("trace_region_size", 12_345_678),))
    assert tt.with_larger_trace_region(hand) is None
    # When tt-metal says it needed more than 4x, take that plus a quarter, rounded to a MiB.
    stderr = (
        "Creating trace buffers of size 60000000B on MeshDevice 0, "
        "but only 10000000B is allocated for trace region."
    )
    bigger = tt.with_larger_trace_region(config, stderr)
    assert bigger.knob_map["trace_region_size"] == 72 * 2**20  # ceil(75e6 / 1 MiB) MiB
    assert bigger.with_batch_size(64) == bigger and bigger.key() != config.key()


def test_tt_space_for_mnist():
    space = default_space(get_study("mnist"), TTBackend())
    dims = {d.name: d.choices for d in space.dimensions}
    assert list(dims) == [
        "batch_size",
        "optimization_level",
        "trace",
        "activation_dtype",
        "experimental_weight_dtype",
        "math_fidelity",
        "fp32_dest_acc_en",
        "experimental_enable_permute_matmul_fusion",
        "experimental-enable-dram-space-saving-optimization",
        "trace_region_size",
        "dtype:fc1.weight",
        "dtype:fc2.weight",
    ]
    # Linear weights only: tt-xla's compiler ignores conv weight overrides.
    assert dims["dtype:fc1.weight"] == dims["dtype:fc2.weight"] == ("bf16", "bfp_bf8", "bfp_bf4")
    assert dims["trace"] == (False, True)
    assert dims["optimization_level"] == (0, 1, 2)
    assert dims["activation_dtype"] == ("bf16",)
    assert dims["experimental_weight_dtype"] == ("none", "bfp_bf8", "bfp_bf4")
    # tt-xla's spellings (compile_options_parser.cc parseMathFidelity), most precise first
    assert dims["math_fidelity"] == ("hifi4", "hifi3", "hifi2", "lofi", "ttnn_default")
    assert dims["fp32_dest_acc_en"] == ("unset", "true")  # "false" only through a space file
    assert dims["experimental_enable_permute_matmul_fusion"] == ("true", "false")
    assert dims["experimental-enable-dram-space-saving-optimization"] == ("false", "true")
    assert dims["trace_region_size"] == (10_000_000, 0)


def test_fp32_dest_acc_false_only_through_a_space_file_with_the_warning():
    space = default_space(get_study("mnist"), TTBackend())
    assert space.warnings() == []
    narrowed = space.narrowed({"fp32_dest_acc_en": ["false", "unset"]})
    dim = {d.name: d for d in narrowed.dimensions}["fp32_dest_acc_en"]
    assert dim.choices == ("unset", "false")
    (warning,) = narrowed.warnings()
    assert 'fp32_dest_acc_en = "false"' in warning and "tt-xla #5116" in warning
    with pytest.raises(SpaceError, match='no choice "maybe"'):
        space.narrowed({"fp32_dest_acc_en": ["maybe"]})
    with pytest.raises(SpaceError, match='math_fidelity has no choice "HiFi4"'):
        space.narrowed({"math_fidelity": ["HiFi4"]})  # tt-xla compares case-sensitively


def test_trace_region_only_in_configs_with_trace_on():
    space = default_space(get_study("mnist"), TTBackend())
    values = {d.name: d.choices[0] for d in space.dimensions}
    off = space.config_from({**values, "trace": False, "trace_region_size": 0})
    assert "trace_region_size" not in off.knob_map
    assert off == space.config_from({**values, "trace": False})  # the same trial: copied
    on = space.config_from({**values, "trace": True, "trace_region_size": 0})
    assert on.knob_map["trace_region_size"] == 0


# --- the stand-in's apply_weight_dtype_overrides follows tt_torch's rules -------------------

_OVERRIDE_RULES = r"""
import json, warnings, torch
import tt_torch
from autotune.numerics import round_bfp
from studies import get_study

def fresh():
    return get_study("mnist").build_model().eval().to(torch.bfloat16)

apply = tt_torch.apply_weight_dtype_overrides
def same(a, b, fmt=None, rule="host"):
    return torch.equal(a, round_bfp(b, fmt, rule=rule) if fmt else b)

out = {}
m = fresh()
orig = {n: p.detach().clone() for n, p in m.named_parameters()}
out["default"] = apply(m, {"default": "bfp_bf8", "fc2.weight": "bf16"})
out["fc1_is_bfp8"] = same(m.fc1.weight, orig["fc1.weight"], "bfp_bf8", "device")
out["fc1_changed"] = not same(m.fc1.weight, orig["fc1.weight"])
out["fc2_unchanged"] = same(m.fc2.weight, orig["fc2.weight"])
out["bias_unchanged"] = same(m.fc1.bias, orig["fc1.bias"])
# A second call cannot reach a weight that already carries an override: the first wins.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["second"] = apply(m, {"fc1.weight": "bfp_bf4"})
out["second_warned"] = any("did not match" in str(w.message) for w in caught)
out["fc1_still_bfp8"] = same(m.fc1.weight, orig["fc1.weight"], "bfp_bf8", "device")
m = fresh()
out["string"] = apply(m, "bfp_bf4")
out["fc2_is_bfp4"] = same(m.fc2.weight, orig["fc2.weight"], "bfp_bf4")
m = fresh()
out["later_wins"] = apply(m, {"fc*": "bfp_bf4", "*1.weight": "bf16"})
print(json.dumps(out))
"""


def test_standin_override_rules_follow_tt_torch(standin):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(STANDIN)])}
    proc = subprocess.run(
        [sys.executable, "-c", _OVERRIDE_RULES], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # "default" covers every *.weight; explicit globs overwrite it; biases are never touched.
    assert out["default"] == [
        ["conv1.weight", "bfp_bf8"],
        ["conv2.weight", "bfp_bf8"],
        ["fc1.weight", "bfp_bf8"],
        ["fc2.weight", "bf16"],
    ]
    assert out["fc1_is_bfp8"] and out["fc1_changed"] and out["fc2_unchanged"]
    assert out["bias_unchanged"]
    assert out["second"] == [] and out["second_warned"] and out["fc1_still_bfp8"]
    assert [d for _, d in out["string"]] == ["bfp_bf4"] * 4 and out["fc2_is_bfp4"]
    # fnmatch globs over all parameters (biases too); a later pattern overwrites an earlier.
    assert out["later_wins"] == [
        ["fc1.weight", "bf16"],
        ["fc1.bias", "bfp_bf4"],
        ["fc2.weight", "bfp_bf4"],
        ["fc2.bias", "bfp_bf4"],
        ["conv1.weight", "bf16"],
    ]


# --- on a real card -------------------------------------------------------------------------


def _no_card_reason() -> str | None:
    """Why the hardware test cannot run here, or None on a machine with a real card."""
    spec = importlib.util.find_spec("pjrt_plugin_tt")
    if spec is None:
        return "no Tenstorrent card: pjrt-plugin-tt is not installed in this interpreter"
    if "tt_standin" in os.environ.get("PYTHONPATH", "") or "tt_standin" in str(spec.origin):
        return "no Tenstorrent card: the stand-in is on PYTHONPATH"
    if not Path("/dev/tenstorrent").exists():
        return "no Tenstorrent card: /dev/tenstorrent does not exist"
    return None


@pytest.mark.tt
def test_mnist_performant_on_card(reference):
    """tt-xla's test_mnist_performant: batch 64, opt level 2, trace on, bf16 > 7,500/s."""
    reason = _no_card_reason()
    if reason is not None:
        pytest.skip(reason)
    config = tt_config(batch_size=64, optimization_level=2, trace=True)
    job = TrialJob(
        config,
        measure_seconds=2.0,
        warmup_iters=32,
        reference_path=reference[0],
        reference_metric=reference[1],
        eval_limit=EVAL_LIMIT,
    )
    result = run_job(job, RunnerSettings(timeout_s=600))
    assert result.ok, f"{result.status}: {result.message}\n{result.stderr_tail}"
    print(result.environment["device"], result.metrics)
    assert result.metrics["throughput_samples_per_s"] > 7_500
    assert result.metrics["pcc"] >= 0.97  # tt-xla's own vision threshold
