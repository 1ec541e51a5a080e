"""CUDA backend: one NVIDIA GPU per trial process (trial-process side imports torch).

Levels: 0 eager; 1 ``torch.compile`` (inductor defaults); 2 ``torch.compile(mode=
"max-autotune-no-cudagraphs")``: inductor benchmarks Triton and cuBLAS/cuDNN kernels per
shape, but leaves CUDA graphs to the trace knob so that they stay one searched dimension.

Trace: CUDA graphs, captured here (`CUDAGraphRunner`) at every level, eager included: after a
warm-up on a side stream (which also compiles and lets cuDNN pick its algorithms), the step
(input cast + model) is captured once per input shape with static input and output buffers,
and each iteration copies the host input into the static input and replays the graph.

Activations: ``fp32`` (IEEE: TF32 off for matmuls and for cuDNN convolutions, which torch
otherwise runs in TF32 by default), ``tf32`` (fp32 tensors, TF32 tensor-core matmuls and
convolutions), ``bf16``, ``fp16``. TF32 is an activation choice rather than an on/off knob:
a knob would double every bf16/fp16 config with settings that do nothing there.

Weights (per Linear): ``activation`` (the activation dtype), ``int8`` and ``fp8_e4m3``:
weight-only, per-output-channel scales, see `autotune.backends._weight_only`. fp8 needs
compute capability >= 8.9 (Ada, Hopper and newer: hardware fp8 conversion); elsewhere such a
trial fails as a compile_error with the reason. Convolutions follow the activation dtype.

Knobs: ``pinned_input`` (the host batch is copied into a page-locked buffer, then to the GPU
with ``non_blocking=True``), ``channels_last`` (NHWC weights and activations for convolutions).

Each timed iteration is the loop of tt-xla's MNIST example: host input -> GPU -> model ->
output to the host (a blocking copy); ``torch.cuda.synchronize()`` at block ends. cuDNN's autotuner
(``cudnn.benchmark``) is on for every config: trial shapes are fixed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from autotune.backends.base import Backend, Knob, run_probe
from autotune.errors import UsageError
from autotune.pytree import leaves, tree_map
from autotune.wire import Status, TrialConfig

if TYPE_CHECKING:
    import torch

#: Lowest compute capability with hardware fp8 (e4m3/e5m2) support: Ada (8.9), Hopper (9.0).
FP8_MIN_CAPABILITY = (8, 9)
GRAPH_WARMUP_ITERS = 3  # side-stream iterations before capture (torch's CUDA graphs notes)
PROBE_TIMEOUT_S = 120
INSTALL_HINT = (
    "install a CUDA build of torch in it, e.g. pip install torch==2.13.0 (PyPI's Linux x86_64 "
    "wheel is a CUDA build); see the README's 'Running on an NVIDIA GPU'"
)

# Run in the trial interpreter by `check_devices`: what torch there sees, as JSON.
_PROBE = """
import json
info = {"devices": []}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append({"name": p.name, "capability": [p.major, p.minor]})
except Exception as exc:
    info["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
print(json.dumps(info))
"""


class CUDABackend(Backend):
    name = "cuda"
    # Highest precision first: the activation dtype, then the weight-only formats.
    weight_dtypes = ("activation", "int8", "fp8_e4m3")
    weight_kinds = frozenset({"linear"})
    activation_dtypes = ("fp32", "tf32", "bf16", "fp16")
    has_trace = True
    knobs = (
        Knob(
            "pinned_input",
            (False, True),
            "copy the host batch into a page-locked buffer, then to the GPU with "
            "non_blocking=True (a DMA transfer, no staging copy by the driver)",
        ),
        Knob(
            "channels_last",
            (False, True),
            "NHWC memory format for convolutions (tensor-core cuDNN kernels without "
            "layout transposes in bf16/fp16)",
        ),
    )
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    install_hint = INSTALL_HINT
    # The reference recipe translated: batch 64, bf16, torch.compile (default mode), CUDA graphs.
    reference_recipe = MappingProxyType(
        {
            "batch_size": 64,
            "optimization_level": 1,
            "trace": True,
            "activation_dtype": "bf16",
            "weights": "activation",
        }
    )
    failure_patterns = (
        # torch's caching allocator raises torch.OutOfMemoryError ("CUDA out of memory. Tried
        # to allocate ..."); cuBLAS and raw CUDA calls report their own allocation failures.
        # Before the compile patterns: inductor wraps errors raised while it compiles.
        (
            Status.OOM,
            re.compile(
                r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED"
                r"|CUDA error: out of memory"
            ),
        ),
        (Status.COMPILE_ERROR, re.compile(r"fp8_e4m3 weights need compute capability")),
        # Something in the step cannot be captured in a CUDA graph (e.g. a host sync).
        (Status.COMPILE_ERROR, re.compile(r"operation not permitted when stream is capturing")),
        (Status.COMPILE_ERROR, re.compile(r"BackendCompilerFailed|InductorError")),
    )

    def __init__(self) -> None:
        self._device: Any = None
        self._graph: CUDAGraphRunner | None = None
        self._pinned: dict[tuple, Any] = {}
        self._copied: Any = None  # event: the last async copy out of a pinned buffer is done

    # --- tuner side (no torch) ------------------------------------------------------------

    def compile_options(self, config: TrialConfig) -> dict[str, Any]:
        """Exactly the keyword arguments given to torch.compile (none at level 0: eager)."""
        if config.optimization_level == 0:
            return {}
        options: dict[str, Any] = {"backend": "inductor", "dynamic": False}
        if config.optimization_level == 2:
            options["mode"] = "max-autotune-no-cudagraphs"
        return options

    def check_devices(self, python: str, devices: Sequence[str] | None) -> None:
        """One line (UsageError) unless torch in `python` sees a CUDA GPU; with `devices`,
        each one alone, as its trial process will (CUDA_VISIBLE_DEVICES=id). Probed in a child
        process: this process never imports torch."""
        for device in devices or [None]:
            env = dict(os.environ)
            if device is not None:
                env[self.visible_devices_env] = device
            info = _probe(python, env)
            if "torch" not in info:
                raise self.cannot_import(python, ["torch"], info.get("error"))
            if not info["cuda"]:
                raise UsageError(
                    f"no CUDA GPU: torch {info['torch']} in {python} is a CPU-only build; "
                    f"{INSTALL_HINT}"
                )
            if not info["devices"]:
                where = (
                    f"with CUDA_VISIBLE_DEVICES={device}"
                    if device is not None
                    else "CUDA_VISIBLE_DEVICES=" + env.get(self.visible_devices_env, "(unset)")
                )
                reason = f": {info['error']}" if info.get("error") else ""
                raise UsageError(
                    f"no CUDA GPU visible to {python} {where} (torch {info['torch']}, CUDA "
                    f"{info['cuda']}{reason}); check nvidia-smi and the driver"
                )

    # --- trial-process side ----------------------------------------------------------------------

    def initialize(self, config: TrialConfig) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU visible to this trial (torch.cuda.is_available())")
        torch.cuda.set_device(0)  # with --devices the trial process sees only its own GPU
        self._device = torch.device("cuda", 0)
        # The legacy flags: torch >= 2.9's fp32_precision API refuses to be mixed with them,
        # and inductor still reads torch.backends.cudnn.allow_tf32.
        tf32 = config.activation_dtype == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True

    def capability(self) -> tuple[int, int]:
        import torch

        major, minor = torch.cuda.get_device_capability(self._device)
        return major, minor

    def prepare(self, model: torch.nn.Module, config: TrialConfig) -> Callable[..., Any]:
        if self._device is None:
            self.initialize(config)
        uses_fp8 = "fp8_e4m3" in config.weight_dtype_map.values()
        if uses_fp8 and self.capability() < FP8_MIN_CAPABILITY:
            raise RuntimeError(
                "fp8_e4m3 weights need compute capability >= "
                f"{'.'.join(map(str, FP8_MIN_CAPABILITY))}; this GPU ({self.device_name()}) "
                "has no hardware fp8"
            )
        run = build_step(model, config, self._device, self.compile_options(config))
        if config.trace:
            self._graph = CUDAGraphRunner(run)
            return self._graph
        self._graph = None
        return run

    def to_device(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        """A tensor of the host batch on the GPU, as it arrives (the step casts floating
        tensors; with trace, the graph copies it into its static input); with pinned_input,
        through a page-locked buffer and a non-blocking copy."""
        pinned = bool(config.knob_map.get("pinned_input", False))
        if pinned:
            x = self._stage_pinned(x)
        out = x.to(self._device, non_blocking=pinned)
        if pinned:
            self._copied.record()  # done when the copy out of the pinned buffer is
        return out

    def _stage_pinned(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        key = (tuple(x.shape), x.dtype)
        if key not in self._pinned:
            self._pinned[key] = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        if self._copied is None:
            self._copied = torch.cuda.Event()
        # The previous non-blocking copy may still be reading the buffer: wait for it.
        self._copied.synchronize()
        return self._pinned[key].copy_(x)

    def to_host(self, y: torch.Tensor) -> torch.Tensor:
        # A blocking copy: the iteration ends when its output is on the host (with trace,
        # `y` is the graph's static output, which the next replay overwrites).
        return y.to("cpu")

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()

    def device_name(self) -> str:
        import torch

        index = self._device if self._device is not None else 0
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"

    def versions(self) -> dict[str, str]:
        import torch

        found = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
        with contextlib.suppress(Exception):
            found["cudnn"] = str(torch.backends.cudnn.version())
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found["triton"] = importlib.metadata.version("triton")
        return found


def _probe(python: str, env: dict[str, str]) -> dict[str, Any]:
    proc = run_probe(python, _PROBE, env=env, timeout=PROBE_TIMEOUT_S)
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"probing the GPU with {python} failed: {last}") from None


def build_step(
    model: torch.nn.Module,
    config: TrialConfig,
    device: Any,
    compile_options: dict[str, Any],
) -> Callable[..., Any]:
    """`config` applied to the fp32 eval-mode `model` on `device`: the weight-only layers
    quantized from the fp32 weights, the rest cast to the activation dtype, channels_last,
    then the input-cast step, compiled with `compile_options` (torch.compile kwargs).
    Nothing here needs a GPU: tests run it on the CPU."""
    import torch

    from autotune.backends._torch_dtypes import TORCH_DTYPES
    from autotune.backends._weight_only import install, weight_only_layers

    if config.activation_dtype not in CUDABackend.activation_dtypes:
        raise ValueError(f"cuda backend: unknown activation dtype {config.activation_dtype!r}")
    dtype = TORCH_DTYPES[config.activation_dtype]
    unknown = set(config.weight_dtype_map.values()) - set(CUDABackend.weight_dtypes)
    if unknown:
        raise ValueError(f"cuda backend: unknown weight dtype {unknown.pop()!r}")
    model = model.eval()
    layers = weight_only_layers(model, config.weight_dtype_map, dtype)
    model = install(model.to(dtype), layers)
    channels_last = bool(config.knob_map.get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def cast(x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():  # token ids, masks: as they are
            return x
        x = x.to(dtype)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    class Step(torch.nn.Module):
        """Cast the floating inputs to the activation dtype (and NHWC), then the model:
        inside the compiled region and the CUDA graph, so the cast fuses with the first
        kernel. Called as the model is: ``step(x)``, ``step(*x)`` or ``step(**x)``."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self.model(*tree_map(cast, args), **tree_map(cast, kwargs))

    step = Step().to(device)
    return torch.compile(step, **compile_options) if compile_options else step


class CUDAGraphRunner:
    """Runs `fn` as CUDA graphs: one capture per input signature (the batch's structure and
    each tensor's shape, dtype and device), then replays.

    As in torch's CUDA graphs notes: a few warm-up calls on a side stream (they also compile
    a torch.compile'd `fn` and settle cuDNN's algorithm choice), then capture into a graph
    whose inputs and outputs are static buffers. Each call copies its tensors into the
    static inputs (one device-to-device copy each) and replays. The result is the static
    output: the next call overwrites it, so copy it first.
    """

    def __init__(self, fn: Callable[..., Any], warmup_iters: int = GRAPH_WARMUP_ITERS) -> None:
        self._fn = fn
        self._warmup_iters = warmup_iters
        self._graphs: dict[tuple, tuple[Any, Any, Any]] = {}

    @property
    def captures(self) -> int:
        return len(self._graphs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        batch = (args, kwargs)
        shapes = [(tuple(t.shape), t.dtype, _device_key(t.device)) for t in leaves(batch)]
        key = (repr(tree_map(lambda t: None, batch)), *shapes)
        if key not in self._graphs:
            static = tree_map(torch.empty_like, batch)
            with torch.no_grad():
                self._graphs[key] = (static, *self._capture(static))
        static, graph, out = self._graphs[key]
        for target, source in zip(leaves(static), leaves(batch), strict=True):
            target.copy_(source)
        graph.replay()
        return out

    def _capture(self, static: tuple[tuple, dict]) -> tuple[Any, Any]:
        import torch

        args, kwargs = static
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self._warmup_iters):
                self._fn(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._fn(*args, **kwargs)
        return graph, out


def _device_key(device: Any) -> Any:
    """ "cuda" and "cuda:0" are one device."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device
