"""CPU backend: eager vs inductor, real fp32/bf16, channels_last (trial-process side imports torch).

Levels: 0 eager; 1 `torch.compile` (inductor defaults); 2 inductor with freezing (weights
become constants, so inductor can pre-pack them for oneDNN/AMX and fold the dtype casts).
Trace: there is no CPU analogue worth searching (inductor already removes the per-op Python
dispatch that a TT trace replays), so the dimension is absent here.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autotune.backends.base import Backend, Knob
from autotune.backends.heap import keep_heap
from autotune.backends.streams import STREAMS, STREAMS_NAME, enter_config_streams
from autotune.backends.tt_options import FP32_DEST_ACC_EN, MATH_FIDELITY, UNSET
from autotune.wire import Status, TrialConfig

if TYPE_CHECKING:
    import torch


CHANNELS_LAST = Knob(
    "channels_last",
    (False, True),
    "NHWC memory format for 4-D activations; lets bf16 convolutions use AMX kernels "
    "without layout conversions",
)
#: The optional CPU compiler (the `[openvino]` extra); absent, the dimension is too.
OPENVINO = "openvino"
try:
    HAS_OPENVINO = importlib.util.find_spec(OPENVINO) is not None
except (ImportError, ValueError):  # a finder refused it, or a broken install
    HAS_OPENVINO = False
COMPILER = Knob(
    "compiler",
    ("inductor", OPENVINO),
    "the compiler at optimization level 1 and 2: torch.compile's inductor, or OpenVINO "
    "(openvino.convert_model + compile_model; one precision, no levels, no input layout)",
    only_with="optimization_level",
)
NO_OPENVINO_NOTE = (
    "note: OpenVINO is not installed, so the CPU compiler is inductor only "
    "(pip install 'autotune[openvino]' adds it to the space)"
)


def uses_openvino(config: TrialConfig) -> bool:
    return config.knob_map.get(COMPILER.name) == OPENVINO


class CPUBackend(Backend):
    name = "cpu"
    weight_dtypes = ("fp32", "bf16")
    weight_kinds = frozenset({"linear", "conv"})
    activation_dtypes = ("fp32", "bf16")
    knobs = (CHANNELS_LAST, STREAMS, *((COMPILER,) if HAS_OPENVINO else ()))
    computes_on_host_cpu = True
    fork_trials = True  # importing torch starts no thread pool: a fork is a clean start
    failure_patterns = (
        (Status.OOM, re.compile(r"DefaultCPUAllocator: can't allocate memory")),
        (Status.COMPILE_ERROR, re.compile(r"BackendCompilerFailed|InductorError|CppCompileError")),
    )

    @property
    def start_notes(self) -> tuple[str, ...]:
        return () if HAS_OPENVINO else (NO_OPENVINO_NOTE,)

    def compile_options(self, config: TrialConfig) -> dict[str, Any]:
        # Exactly the keyword arguments given to torch.compile (none at level 0: eager), or
        # for OpenVINO the properties given to compile_model (plus INFERENCE_NUM_THREADS:
        # the trial process's threads, set where it runs).
        if config.optimization_level == 0:
            return {}
        if uses_openvino(config):
            from autotune.backends._openvino import compile_config

            streams = config.knob_map.get(STREAMS_NAME, 1)
            return {
                "compiler": OPENVINO,
                "properties": compile_config(config.activation_dtype, streams),
            }
        options = {"backend": "inductor", "dynamic": False}
        if config.optimization_level == 2:
            options["options"] = {"freezing": True}
        return options

    def device_name(self) -> str:
        from autotune.host import cpu_model

        return cpu_model()

    def prepare(self, model: torch.nn.Module, config: TrialConfig) -> Callable[..., Any]:
        import torch

        from autotune.backends._torch_dtypes import TORCH_DTYPES, apply_layer_dtypes

        keep_heap()  # every process alike: trial (forked or not) and the user's (heap.py)
        streams = config.knob_map.get(STREAMS_NAME, 1)
        if uses_openvino(config):
            from autotune.backends._openvino import OpenVINOModel, compile_config

            # OpenVINO runs its own threads: all of this process's, over its streams.
            properties = compile_config(config.activation_dtype, streams, torch.get_num_threads())
            return OpenVINOModel(model.float(), properties)
        enter_config_streams(streams)
        model = apply_layer_dtypes(
            model.eval(), config.weight_dtype_map, TORCH_DTYPES[config.activation_dtype]
        )
        if config.knob_map.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        options = self.compile_options(config)
        if options:
            model = torch.compile(model, **options)
        return model

    def to_device(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        import torch

        from autotune.backends._torch_dtypes import TORCH_DTYPES

        if not x.is_floating_point() or uses_openvino(config):
            return x  # ids, masks, categories: never cast; OpenVINO takes fp32 as it is
        x = x.to(TORCH_DTYPES[config.activation_dtype])
        if config.knob_map.get("channels_last") and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class CPUEmulatedTTBackend(CPUBackend):
    """Tenstorrent's numerics on this CPU: the accuracy pre-screen (`--emulate tt`).

    The dtype map offers what tt-xla offers (bf16, bfp_bf8, bfp_bf4 on matmul/linear
    weights; the compiler ignores conv overrides). As on the card, the model is cast to bf16
    first and the mapped weights are then rounded from their bf16 values exactly as
    tt-metal's host packer does (`autotune.numerics`, rule "host"); activations are bf16.
    Where this CPU has no native bf16 the model computes in fp32 with every op's output
    rounded to bf16 (`_bf16`), which holds the same values far faster; `numerics()` says
    which ran. The weight values are exact (the card's packer, checked against ttnn); math
    fidelity and the destination accumulation (knobs ``math_fidelity`` and
    ``fp32_dest_acc_en``, tt-xla's compile options) are a model of the matrix engine
    (`_fidelity`), applied to every linear, conv2d and matmul. Throughput is this CPU's and
    is labelled with this backend's name.
    """

    name = "cpu-emulate-tt"
    weight_dtypes = ("bf16", "bfp_bf8", "bfp_bf4")
    weight_kinds = frozenset({"linear"})
    activation_dtypes = ("bf16",)
    # Not OpenVINO: its numerics are not the card's.
    knobs = (CHANNELS_LAST, STREAMS, MATH_FIDELITY, FP32_DEST_ACC_EN)
    start_notes = ()
    numerics_rule = "host"
    emulation_note = (
        "--emulate tt: exact: the weight formats (bf16, bfp_bf8, bfp_bf4 as tt-metal packs "
        "them, checked against ttnn); modelled: math_fidelity and fp32_dest_acc_en (the matrix "
        "engine's fidelity phases and Dst accumulation, from Tenstorrent's ISA documentation, "
        "not checked on a card); throughput: this CPU's"
    )

    def __init__(self, native_bf16: bool | None = None) -> None:
        """native_bf16: run bf16 natively (True) or as rounded fp32 (False); None: as this
        CPU's flags say (`_bf16.choose`)."""
        self._native = native_bf16
        self._compute: Any = None

    @property
    def compute(self) -> Any:
        """The `_bf16.BF16Compute` in force (trial-process side: imports torch)."""
        if self._compute is None:
            from autotune.backends import _bf16

            if self._native is None:
                self._compute = _bf16.choose()
            else:
                self._compute = _bf16.BF16Compute(self._native, "chosen by the caller")
        return self._compute

    def prepare(self, model: torch.nn.Module, config: TrialConfig) -> Callable[..., Any]:
        import torch

        keep_heap()
        enter_config_streams(config.knob_map.get(STREAMS_NAME, 1))
        fidelity, fp32_dest = emulated_fidelity(config.knob_map)
        model = card_model(
            model,
            config.weight_dtype_map,
            self.numerics_rule,
            self.compute.native,
            fidelity,
            fp32_dest,
        )
        if config.knob_map.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        options = self.compile_options(config)
        if not fp32_dest:
            # bf16 Dst is an ordered loop of roundings: run it eagerly, not through inductor.
            options = {}
        if options and not self.compute.native:
            # Inductor drops fp32 -> bf16 -> fp32 round trips unless told to keep them.
            inductor = {**options.get("options", {}), "emulate_precision_casts": True}
            options = {**options, "options": inductor}
        return torch.compile(model, **options) if options else model

    def to_device(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        import torch

        if not x.is_floating_point():  # token ids, masks, categories: never cast
            return x
        x = x.to(torch.bfloat16)
        if not self.compute.native:
            x = x.float()  # bf16 values in fp32
        if config.knob_map.get("channels_last") and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def numerics(self) -> dict[str, str]:
        return {
            "weight_rounding": f"tt-metal {self.numerics_rule} packer on bf16 weights (exact)",
            "math_fidelity": "modelled: matrix-engine fidelity phases and Dst accumulation "
            "(autotune/backends/_fidelity.py), not bit-exact",
        } | self.compute.describe()


#: What ``math_fidelity`` = "ttnn_default" is emulated as: ttnn's compute kernel config default
#: (``WormholeComputeKernelConfig``, ttnn compute_kernel_config.hpp: LoFi, fp32_dest_acc_en
#: false). ttnn's ops may pick their own; the lowest fidelity is the cautious guess.
TTNN_DEFAULT_FIDELITY = "lofi"


def emulated_fidelity(knobs: dict[str, Any]) -> tuple[str, bool]:
    """(fidelity, fp32 Dst) the emulation models for a config's knobs.

    Unset ``math_fidelity`` is MLIR's HiFi4 and unset ``fp32_dest_acc_en`` MLIR's true
    (tt-xla compile_options.h: "MLIR default is HiFi4" / "true for all operations"; tt-xla's
    compiler_config.py adds that at optimization level > 0 ttnn picks per op, bf16 for bf16
    matmuls: ask for "false" in a space file to see that case)."""
    fidelity = str(knobs.get(MATH_FIDELITY.name, "hifi4"))
    if fidelity == "ttnn_default":
        fidelity = TTNN_DEFAULT_FIDELITY
    return fidelity, knobs.get(FP32_DEST_ACC_EN.name, UNSET) != "false"


def card_model(
    model: torch.nn.Module,
    weight_map: dict[str, str],
    rule: str,
    native_bf16: bool,
    fidelity: str = "hifi4",
    fp32_dest: bool = True,
) -> torch.nn.Module:
    """`model` (in place) holding what the card holds, computing as bf16 does.

    native_bf16: a bf16 model. Otherwise an fp32 model whose parameters and buffers hold
    bf16 values and whose every op output is rounded to bf16 (`_bf16.bf16_rounded`).
    `fidelity` / `fp32_dest`: the matrix engine's (`_fidelity`); HiFi4 with an fp32 Dst is
    the exact bf16 product, i.e. plain bf16 arithmetic, and needs no model."""
    import torch

    from autotune.backends._bf16 import bf16_rounded, with_mode

    model = model.eval().to(torch.bfloat16)  # the recipe's cast, before the overrides
    round_weights(model, weight_map, rule)
    if not native_bf16:
        model = bf16_rounded(model.float())
    if fidelity != "hifi4" or not fp32_dest:
        from autotune.backends._fidelity import Fidelity

        # Below the bf16 rounding (entered first): the phases' partial products must not be
        # rounded, only each op's result.
        model = with_mode(model, lambda: Fidelity(fidelity, fp32_dest))
    return model


def round_weights(model: torch.nn.Module, weight_map: dict[str, str], rule: str) -> None:
    """Replace mapped weights by the values the card holds for them (`card_weight`), in
    place, each stored in the parameter's own dtype."""
    import torch

    from autotune.backends._torch_dtypes import resolve_weight_map

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, dtype in resolve_weight_map(list(params), weight_map).items():
            params[name].copy_(card_weight(params[name], dtype, rule, name))


def card_weight(weight: torch.Tensor, dtype: str, rule: str, name: str = "") -> torch.Tensor:
    """The values the card holds for `weight` stored as `dtype`, as a bf16 tensor.

    The card packs the bf16-cast weight (the recipe runs `model.to(torch.bfloat16)` before
    `apply_weight_dtype_overrides`), so the weight is rounded from its bf16 value, whatever
    dtype it has here."""
    import torch

    from autotune.numerics import BFP_FORMATS, round_bfp

    bf16 = weight.detach().to(torch.bfloat16)
    if dtype in BFP_FORMATS:
        return round_bfp(bf16, dtype, rule)
    if dtype == "bf16":
        return bf16
    raise ValueError(f"{name or 'weight'}: dtype {dtype!r} is not emulated")
