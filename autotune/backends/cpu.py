"""CPU backend: eager vs inductor, real fp32/bf16, channels_last (worker side imports torch).

Levels: 0 eager; 1 `torch.compile` (inductor defaults); 2 inductor with freezing (weights
become constants, so inductor can pre-pack them for oneDNN/AMX and fold the dtype casts).
Trace: there is no CPU analogue worth searching (inductor already removes the per-op Python
dispatch that a TT trace replays), so the dimension is absent here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.backends.base import Backend, Knob
from autotune.config import Status, TrialConfig

if TYPE_CHECKING:
    import torch


class CPUBackend(Backend):
    name = "cpu"
    weight_dtypes = ("fp32", "bf16")
    weight_kinds = frozenset({"linear", "conv"})
    activation_dtypes = ("fp32", "bf16")
    knobs = (
        Knob(
            "channels_last",
            (False, True),
            "NHWC memory format for 4-D activations; lets bf16 convolutions use AMX kernels "
            "without layout conversions",
        ),
    )
    computes_on_host_cpu = True
    failure_patterns = (
        (Status.OOM, re.compile(r"DefaultCPUAllocator: can't allocate memory")),
        (Status.COMPILE_ERROR, re.compile(r"BackendCompilerFailed|InductorError|CppCompileError")),
    )

    def compile_options(self, config: TrialConfig) -> dict[str, Any]:
        # Exactly the keyword arguments given to torch.compile (none at level 0: eager).
        if config.optimization_level == 0:
            return {}
        options = {"backend": "inductor", "dynamic": False}
        if config.optimization_level == 2:
            options["options"] = {"freezing": True}
        return options

    def device_name(self) -> str:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        import platform

        return platform.processor() or platform.machine()

    def prepare(
        self, model: torch.nn.Module, config: TrialConfig
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        import torch

        from autotune.backends._torch_dtypes import TORCH_DTYPES, apply_layer_dtypes

        model = apply_layer_dtypes(
            model.eval(), config.weight_dtype_map, TORCH_DTYPES[config.activation_dtype]
        )
        if config.extra.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        options = self.compile_options(config)
        if options:
            model = torch.compile(model, **options)
        return model

    def to_device(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        import torch

        from autotune.backends._torch_dtypes import TORCH_DTYPES

        x = x.to(TORCH_DTYPES[config.activation_dtype])
        if config.extra.get("channels_last") and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class CPUEmulatedTTBackend(CPUBackend):
    """Tenstorrent's weight numerics on this CPU: the accuracy pre-screen (`--emulate tt`).

    The dtype map offers what tt-xla offers (bf16, bfp_bf8, bfp_bf4 on matmul/linear
    weights; the compiler ignores conv overrides) and applies it by rounding each weight
    exactly as tt-metal's host packer does (`autotune.numerics`, rule "host"); the model
    then runs in bf16 like on the card. Accuracy is therefore what the card's weight
    rounding gives; throughput is this CPU's and is labelled with this backend's name.
    """

    name = "cpu-emulate-tt"
    weight_dtypes = ("bf16", "bfp_bf8", "bfp_bf4")
    weight_kinds = frozenset({"linear"})
    activation_dtypes = ("bf16",)
    numerics_rule = "host"

    def prepare(
        self, model: torch.nn.Module, config: TrialConfig
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        round_weights(model, config.weight_dtype_map, self.numerics_rule)
        return super().prepare(model, replace(config, weight_dtypes=()))


def round_weights(model: torch.nn.Module, weight_map: dict[str, str], rule: str) -> None:
    """Replace mapped weights by the values the card holds for them (in place, fp32)."""
    import torch

    from autotune.backends._torch_dtypes import resolve_weight_map
    from autotune.numerics import BFP_FORMATS, round_bfp

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, dtype in resolve_weight_map(list(params), weight_map).items():
            p = params[name]
            if dtype in BFP_FORMATS:
                p.copy_(round_bfp(p.detach().float(), dtype, rule))
            elif dtype == "bf16":
                p.copy_(p.detach().to(torch.bfloat16).float())
            else:
                raise ValueError(f"{name}: dtype {dtype!r} is not emulated")
