"""The CUDA backend (`--backend cuda`).

There is no NVIDIA GPU on the development machine or in CI. Tests marked `cuda` need one and
skip, with the reason shown (`-rs`), without it; bench/gpu_check.sh runs them on a lent GPU.
Everything else runs here, on the CPU, for real: the compile options, the search space and
the reference recipe, OOM classification from torch's own error text, weight-only int8/fp8
packing numerics and the quantized MNIST model, the start-up check that fails in one line
on this GPU-less machine, the queued reference trial and the export. Mocked: only the GPU's
presence, in the one tuner test that needs a study to start (said there).
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autotune.analysis import reference_recipe_row, trial_rows
from autotune.backends import get_backend
from autotune.backends._weight_only import (
    FP8_E4M3_MAX,
    WeightOnlyLinear,
    quantize_fp8_e4m3,
    quantize_int8,
)
from autotune.backends.cuda import CUDABackend, CUDAGraphRunner, build_step
from autotune.errors import UsageError
from autotune.export import export_dict, render
from autotune.records import (
    FROM_RECIPE,
    StudyRecord,
    TrialRecord,
    finished_trial,
    read_study,
    write_study,
)
from autotune.tables import reference_line
from autotune.wire import Status, TrialConfig, TrialJob, TrialResult
from search_spaces import default_space, recipe_params
from studies import get_study

HAS_GPU = torch.cuda.is_available()


def gpu(test):
    """Marks a test `cuda` and skips it, saying why, where no GPU is visible."""
    reason = (
        "needs an NVIDIA GPU: torch.cuda.is_available() is False here "
        f"(torch {torch.__version__}, CUDA {torch.version.cuda})"
    )
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_GPU, reason=reason)(test))


def cfg(**kw) -> TrialConfig:
    base = {
        "model": "mnist",
        "backend": "cuda",
        "batch_size": 64,
        "optimization_level": 0,
        "trace": False,
        "activation_dtype": "bf16",
    }
    return TrialConfig(**{**base, **kw})


# --- tuner side: options, space, recipe --------------------------------------------------


def test_level_2_is_max_autotune_without_inductor_cudagraphs():
    from torch._inductor import list_mode_options

    mode = CUDABackend().compile_options(cfg(optimization_level=2))["mode"]
    options = list_mode_options(mode)
    assert options.get("max_autotune") is True
    # Plain "max-autotune" would add inductor's own CUDA graphs on top of ours.
    assert not options.get("triton.cudagraphs")
    assert list_mode_options("max-autotune").get("triton.cudagraphs") is True
    # The trace knob (our CUDA graphs) does not change what torch.compile receives.
    backend = CUDABackend()
    for level in (0, 1, 2):
        assert backend.compile_options(cfg(optimization_level=level, trace=True)) == (
            backend.compile_options(cfg(optimization_level=level))
        )


def test_space_offers_the_issue_knobs():
    space = default_space(get_study("mnist"), get_backend("cuda"))
    dims = {d.name: d.choices for d in space.dimensions}
    assert dims["optimization_level"] == (0, 1, 2)
    assert dims["trace"] == (False, True)
    assert dims["activation_dtype"] == ("fp32", "tf32", "bf16", "fp16")
    assert dims["pinned_input"] == (False, True)
    assert dims["channels_last"] == (False, True)
    # Per-Linear weights only: convolutions follow the activation dtype.
    weight_dims = {d.name: d.choices for d in space.weight_dimensions}
    assert weight_dims == {
        "dtype:fc1.weight": ("activation", "int8", "fp8_e4m3"),
        "dtype:fc2.weight": ("activation", "int8", "fp8_e4m3"),
    }


def test_reference_recipe_is_batch_64_bf16_compiled_with_cuda_graphs():
    space = default_space(get_study("mnist"), get_backend("cuda"))
    params, config = recipe_params(space, CUDABackend.reference_recipe)
    assert config == cfg(
        batch_size=64,
        optimization_level=1,
        trace=True,
        activation_dtype="bf16",
        weight_dtypes=(("fc1.weight", "activation"), ("fc2.weight", "activation")),
        knobs=(("channels_last", False), ("pinned_input", False)),
    )
    assert params["log2_batch_size"] == 6 and params["trace"] is True
    assert set(params) == {d.name for d in space.dimensions} - {"batch_size"} | {"log2_batch_size"}
    # A space narrowed past the recipe has no reference; a backend without one neither.
    narrowed = space.narrowed({"activation_dtype": ["fp16"]})
    assert recipe_params(narrowed, CUDABackend.reference_recipe) is None
    assert recipe_params(space.narrowed({"trace": [False]}), CUDABackend.reference_recipe) is None
    batch_128 = space.narrowed({"batch_size": [128]})
    assert recipe_params(batch_128, CUDABackend.reference_recipe) is None
    assert recipe_params(space, get_backend("cpu").reference_recipe) is None


# --- OOM and other failures, from the real error text ----------------------------------------

# torch's CUDA caching allocator message (c10/cuda/CUDACachingAllocator.cpp), as raised on an
# 80 GB H100; the figures are an example, the wording is torch's.
CUDA_OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.12 GiB "
    "memory in use. Of the allocated memory 76.95 GiB is allocated by PyTorch, and 483.51 MiB "
    "is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try "
    "setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
    "documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


def trial_text(exc: BaseException) -> str:
    """What autotune.child.main classifies: `Type: message`, then the formatted traceback."""
    try:
        raise exc
    except BaseException as raised:
        return f"{type(raised).__name__}: {raised}\n{traceback.format_exc()}"


def test_cuda_oom_error_is_oom():
    backend = CUDABackend()
    exc = torch.cuda.OutOfMemoryError(CUDA_OOM_MESSAGE)
    assert isinstance(exc, torch.OutOfMemoryError)  # the class torch raises, CPU build too
    assert backend.classify(trial_text(exc)) is Status.OOM
    # Raised while inductor compiles or autotunes: wrapped, and still an OOM (not compile).
    from torch._dynamo.exc import BackendCompilerFailed

    def inductor():
        pass

    wrapped = BackendCompilerFailed(inductor, exc, None)
    assert "BackendCompilerFailed" in trial_text(wrapped)
    assert backend.classify(trial_text(wrapped)) is Status.OOM
    # cuBLAS cannot allocate its workspace.
    cublas = RuntimeError(
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
    )
    assert backend.classify(trial_text(cublas)) is Status.OOM


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the trial would run")
def test_a_cuda_trial_on_a_machine_without_gpu_returns_a_failure(tmp_path):
    """The real trial process, on this GPU-less machine: a result comes back, not a hang."""
    from autotune.launch.runner import RunnerSettings, run_job

    job = TrialJob(cfg(), reference_path=str(tmp_path / "none.pt"))
    result = run_job(job, RunnerSettings(timeout_s=300, cache_dir=tmp_path))
    assert result.status is Status.CRASH
    assert "no CUDA GPU visible" in result.message


# --- weight-only numerics (torch's casts and matmuls run on the CPU too) --------------------


def weights(rows: int = 64, cols: int = 300) -> torch.Tensor:
    """Rows of very different magnitudes, outliers, an all-zero row and tiny values."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(rows, cols, generator=gen) * torch.logspace(-4, 2, rows)[:, None]
    w[3, 7] = 40.0 * w[3].abs().max()  # an outlier sets its row's scale
    w[5] = 0.0
    w[6] = 1e-9 * torch.randn(cols, generator=gen)
    return w


def test_int8_per_channel_quantization_error_is_half_a_step():
    w = weights()
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (64,)
    assert int(q.abs().max()) <= 127
    nonzero = w.abs().amax(1) > 0
    assert (q.abs().amax(1)[nonzero] == 127).all()  # each row uses the full range
    assert (q[5] == 0).all() and scale[5] == 1.0  # all-zero row: zeros, finite scale
    err = (w - q.float() * scale[:, None]).abs()
    bound = scale[:, None] / 2 * (1 + 1e-5)  # round to nearest: half a step, fp32 slack
    assert (err <= bound).all(), float((err / bound).max())


def test_fp8_e4m3_per_channel_quantization_error_bound():
    w = weights()
    q, scale = quantize_fp8_e4m3(w)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64,)
    assert torch.finfo(torch.float8_e4m3fn).max == FP8_E4M3_MAX
    qf = q.float()
    assert torch.isfinite(qf).all()
    nonzero = w.abs().amax(1) > 0
    assert (qf.abs().amax(1)[nonzero] == FP8_E4M3_MAX).all()
    assert (qf[5] == 0).all()
    # e4m3 keeps 3 mantissa bits: round to nearest is within 2^-4 relative for normal
    # values (|v| >= 2^-6) and within half the subnormal step (2^-10) below.
    v = w / scale[:, None]
    err = (v - qf).abs()
    bound = torch.where(v.abs() >= 2**-6, v.abs() * 2**-4, torch.full_like(v, 2**-10))
    assert (err <= bound * (1 + 1e-6)).all(), float((err / bound).max())
    # Dequantized, each row is as accurate relative to its own largest weight.
    deq = qf * scale[:, None]
    rel = (w - deq).abs().amax(1)[nonzero] / w.abs().amax(1)[nonzero]
    assert (rel <= 2**-4).all()


@pytest.mark.parametrize("fmt", ["int8", "fp8_e4m3"])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_only_linear_matches_its_dequantized_weight(fmt, bias):
    gen = torch.Generator().manual_seed(1)
    linear = nn.Linear(300, 64, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(weights())
    x = torch.randn(8, 300, generator=gen)
    layer = WeightOnlyLinear(linear, fmt, torch.float32)
    assert layer.qweight.dtype == {"int8": torch.int8, "fp8_e4m3": torch.float8_e4m3fn}[fmt]
    with torch.no_grad():
        expected = F.linear(x, layer.dequantized(), linear.bias)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-4)
        # In bf16 the same layer runs bf16 matmuls with bf16 scale and bias.
        out16 = WeightOnlyLinear(linear, fmt, torch.bfloat16)(x.bfloat16())
    assert out16.dtype == torch.bfloat16
    scale = float(expected.abs().max())
    torch.testing.assert_close(out16.float(), expected, rtol=0.02, atol=0.02 * scale)


@pytest.fixture(scope="module")
def mnist_eval():
    study = get_study("mnist")
    inputs, _ = study.eval_data()
    inputs = inputs[:2048]
    with torch.no_grad():
        reference = study.build_model()(inputs)
    return study, inputs, reference


@pytest.mark.parametrize(
    ("activation", "fc1", "fc2", "min_agreement"),
    [
        ("fp32", "activation", "activation", 1.0),
        ("bf16", "int8", "int8", 0.995),
        ("fp16", "fp8_e4m3", "int8", 0.995),
        ("bf16", "fp8_e4m3", "fp8_e4m3", 0.995),
    ],
)
def test_build_step_on_cpu_keeps_mnist_accurate(mnist_eval, activation, fc1, fc2, min_agreement):
    """The whole model transformation, on the CPU: quantized linears, cast convolutions,
    channels_last, and the input cast inside the step."""
    study, inputs, reference = mnist_eval
    config = cfg(
        activation_dtype=activation,
        weight_dtypes=(("fc1.weight", fc1), ("fc2.weight", fc2)),
        knobs=(("channels_last", True),),
    )
    step = build_step(study.build_model(), config, torch.device("cpu"), {})
    model = step.model
    for name, fmt in (("fc1", fc1), ("fc2", fc2)):
        layer = getattr(model, name)
        if fmt == "activation":
            assert type(layer) is nn.Linear
        else:
            assert isinstance(layer, WeightOnlyLinear) and layer.fmt == fmt
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[activation]
    assert model.conv2.weight.dtype == dtype
    assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = torch.cat([step(chunk) for chunk in inputs.split(256)]).float()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    agreement = (out.argmax(1) == reference.argmax(1)).double().mean().item()
    assert agreement >= min_agreement
    if activation == "fp32":
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def test_build_step_refuses_what_it_cannot_apply():
    study = get_study("mnist")
    with pytest.raises(ValueError, match=r"nn\.Linear weights only"):
        build_step(study.build_model(), cfg(weight_dtypes=(("conv1.weight", "int8"),)), "cpu", {})
    with pytest.raises(ValueError, match="unknown weight dtype 'bfp_bf8'"):
        build_step(study.build_model(), cfg(weight_dtypes=(("fc1.weight", "bfp_bf8"),)), "cpu", {})


# --- start-up check, through the real CLI on this GPU-less machine ----------------------------


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the study would start")
@pytest.mark.parametrize("devices", [(), ("--devices", "0,1")])
def test_study_without_visible_gpu_is_one_line_exit_2(cli, tmp_path, devices):
    r = cli("study", "--model", "mnist", "--backend", "cuda", *devices, "--no-progress")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("autotune: no CUDA GPU")
    assert "CPU-only build" in lines[0] and "pip install torch==2.13.0" in lines[0]
    assert not (tmp_path / "autotune.db").exists()  # nothing started, nothing stored


# --- the reference trial, the summary and the export --------------------------------------


def test_tuner_queues_the_reference_recipe_first(tmp_path, monkeypatch):
    # Mocked: the GPU's presence (no GPU here). Everything else is the real tuner start.
    monkeypatch.setattr(CUDABackend, "check_devices", lambda self, python, devices: None)
    from autotune.study_options import StudyOptions
    from autotune.tuner import Tuner

    opts = StudyOptions(
        model="mnist",
        backend="cuda",
        trials=5,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    tuner = Tuner(opts)
    waiting = tuner.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    params, config = recipe_params(tuner.space, CUDABackend.reference_recipe)
    assert waiting[0].system_attrs["fixed_params"] == params  # what enqueue_trial fixed
    assert TrialRecord.of(waiting[0]).starting_point == FROM_RECIPE
    assert TrialConfig.from_dict(read_study(tuner.study).reference_recipe) == config
    assert config.batch_size == 64 and config.trace and config.activation_dtype == "bf16"


MAX_DROP = 0.5
DEVICE = "NVIDIA H100 80GB HBM3 (compute capability 9.0)"


def stored_study(tmp_path: Path) -> optuna.Study:
    """A study stored as the tuner stores one: the reference recipe and a faster pick, measured.
    The figures are made up for the test (no GPU here); the layout is the tuner's."""
    space = default_space(get_study("mnist"), get_backend("cuda"))
    _, recipe = recipe_params(space, CUDABackend.reference_recipe)
    pick = cfg(
        batch_size=4096,
        optimization_level=2,
        trace=True,
        activation_dtype="bf16",
        weight_dtypes=(("fc1.weight", "int8"), ("fc2.weight", "activation")),
        knobs=(("channels_last", True), ("pinned_input", True)),
    )
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'autotune.db'}",
        study_name="mnist-cuda",
        directions=["maximize", "minimize"],
    )
    options = {"model": "mnist", "backend": "cuda", "max_accuracy_drop": MAX_DROP}
    write_study(study, StudyRecord(options=options, reference_recipe=recipe.to_dict()))
    for config, throughput in ((recipe, 400_000.0), (pick, 2_400_000.0)):
        record = TrialRecord(
            config=config.to_dict(),
            config_key=config.key(),
            status="ok",
            message="",
            metrics={"throughput_samples_per_s": throughput, "metric_drop": 0.01},
            environment={"device": DEVICE, "versions": {"torch": "2.13.0+cu128", "cuda": "12.8"}},
        )
        study.add_trial(
            finished_trial(
                record, values=[throughput, 0.01], constraints={"metric_drop": 0.01 - MAX_DROP}
            )
        )
    return study


def test_export_and_summary_report_device_and_reference(tmp_path):
    study = stored_study(tmp_path)
    data = export_dict(study)
    assert data["backend"] == "cuda" and data["batch_size"] == 4096
    assert data["compile_options"] == {
        "backend": "inductor",
        "dynamic": False,
        "mode": "max-autotune-no-cudagraphs",
    }
    assert data["weight_dtype_overrides"] == {"fc1.weight": "int8", "fc2.weight": "activation"}
    assert data["knobs"] == {"channels_last": True, "pinned_input": True}
    assert data["provenance"]["device"] == DEVICE  # name and compute capability
    assert data["provenance"]["versions"]["cuda"] == "12.8"
    reference = data["reference"]
    assert reference["trial"] == 0 and reference["throughput_samples_per_s"] == 400_000.0
    assert reference["config"]["batch_size"] == 64 and reference["config"]["trace"] is True
    assert math.isclose(reference["speedup"], 6.0)
    assert json.loads(render(data, "json"))["reference"] == reference
    rows = trial_rows(study)
    line = reference_line(reference_recipe_row(study, rows), rows[1])
    assert line.startswith("reference, the reference recipe (trial 0, bs64 O1 trace bf16)")
    assert "400,000 samples/s" in line and "6.00x the reference" in line


def test_export_without_a_reference_says_none(tmp_path):
    study = stored_study(tmp_path)
    write_study(study, replace(read_study(study), reference_recipe=None))
    assert export_dict(study)["reference"] is None
    assert reference_recipe_row(study, trial_rows(study)) is None


# --- on a real GPU (bench/gpu_check.sh runs these) --------------------------------------------


@gpu
def test_check_devices_sees_the_gpu():
    backend = CUDABackend()
    backend.check_devices(sys.executable, None)
    backend.check_devices(sys.executable, ["0"])
    with pytest.raises(UsageError, match=r"no CUDA GPU visible .* CUDA_VISIBLE_DEVICES=99"):
        backend.check_devices(sys.executable, ["99"])


@gpu
def test_cuda_graph_replays_the_step():
    study = get_study("mnist")
    step = build_step(study.build_model(), cfg(), torch.device("cuda"), {})
    runner = CUDAGraphRunner(step)
    gen = torch.Generator().manual_seed(0)
    tol = {"rtol": 1.6e-2, "atol": 1e-2}  # bf16 (cuBLAS may pick other kernels under capture)
    with torch.no_grad():
        for _ in range(3):  # distinct inputs: each replay reads the new one
            x = torch.randn(64, 1, 28, 28, generator=gen).cuda()
            torch.testing.assert_close(runner(x).clone(), step(x), **tol)
        assert runner.captures == 1
        # A batch of several tensors (args and kwargs) replays as captured.
        double = CUDAGraphRunner(lambda a, *, b: a * 2 + b.float())
        a, b = torch.randn(8, 3).cuda(), torch.arange(3).cuda()  # b: int64, never cast
        torch.testing.assert_close(double(a, b=b).clone(), a * 2 + b.float())
        runner(torch.randn(32, 1, 28, 28, generator=gen).cuda())  # a new shape: new graph
        assert runner.captures == 2


@gpu
@pytest.mark.parametrize(("trace", "pinned"), [(False, False), (True, True)])
def test_trial_loop_on_gpu_matches_cpu_fp32(trace, pinned):
    """The trial process's loop, to_host(run(to_device(x))), on distinct batches back to back:
    catches static or pinned buffers reused too early. Eager (level 0), to keep the lent
    GPU's minutes for the study; the compiled path runs in the trial process test below."""
    study = get_study("mnist")
    backend = CUDABackend()
    fp8 = torch.cuda.get_device_capability() >= (8, 9)
    config = cfg(
        optimization_level=0,
        trace=trace,
        weight_dtypes=(("fc1.weight", "int8"), ("fc2.weight", "fp8_e4m3" if fp8 else "int8")),
        knobs=(("pinned_input", pinned), ("channels_last", True)),
    )
    backend.initialize(config)
    model = study.build_model()
    inputs, _ = study.eval_data()
    with torch.no_grad():
        run = backend.prepare(study.build_model(), config)
        outs = [backend.to_host(run(backend.to_device(c, config))) for c in inputs[:1024].split(64)]
        backend.synchronize()
        reference = model(inputs[:1024])
    out = torch.cat(outs).float()
    assert outs[0].device.type == "cpu"
    agreement = (out.argmax(1) == reference.argmax(1)).double().mean().item()
    assert agreement >= 0.99
    assert "compute capability" in backend.device_name()
    assert torch.backends.cuda.matmul.allow_tf32 is False  # bf16 config: TF32 off


@gpu
def test_real_cuda_oom_is_classified_oom():
    backend = CUDABackend()
    with pytest.raises(torch.OutOfMemoryError) as info:
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # 1 PiB
    assert backend.classify(f"{info.type.__name__}: {info.value}") is Status.OOM


@gpu
def test_trial_process_runs_the_reference_recipe_on_gpu(tmp_path):
    """A real trial in a real trial process: the reference recipe, measured and scored."""
    from autotune.jobs import fp32_reference
    from autotune.launch.runner import RunnerSettings, run_job

    settings = RunnerSettings(timeout_s=300, cache_dir=tmp_path)
    ref = fp32_reference("mnist", 1000, settings, tmp_path)
    space = default_space(get_study("mnist"), get_backend("cuda"))
    _, config = recipe_params(space, CUDABackend.reference_recipe)
    job = TrialJob(
        config,
        measure_seconds=0.3,
        warmup_seconds=0.2,
        reference_path=str(ref.path),
        reference_metric=ref.metric_value,
        eval_limit=1000,
    )
    result: TrialResult = run_job(job, settings)
    assert result.status is Status.OK, (result.message, result.stderr_tail)
    assert result.metrics["throughput_samples_per_s"] > 0
    assert result.metrics["metric_drop"] < 0.5
    assert "compute capability" in result.environment["device"]
    assert result.environment["versions"]["cuda"] not in ("", "None")
