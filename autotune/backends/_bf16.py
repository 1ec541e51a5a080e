"""bf16 arithmetic without bf16 kernels: compute in fp32, round every op's output to bf16.

Why: a Tenstorrent card holds every activation as a bf16 tensor, so emulating it on a CPU
means bf16 arithmetic. Where the CPU has no native bf16 (AMD EPYC and older Xeons: AVX2 only)
PyTorch's bf16 kernels run several times slower than fp32 (measured 8x on the MNIST CNN). The
same values between ops are had in fp32: every weight and input holds a bf16 value, and each
op's fp32 result is rounded to the nearest bf16 (ties to even), as a bf16 kernel's output is
(they accumulate in fp32 too). Only the order of accumulation inside one op may differ;
`tests/test_emulation.py` checks that both give the same predictions on the shipped models.

The choice is made per machine from its CPU flags (never a fixed default) and recorded.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.overrides import TorchFunctionMode

# Functions whose float outputs are bf16 values whenever their inputs are: views, layout
# changes and value selection. Rounding them again would only cost memory traffic.
_EXACT = frozenset(
    {
        "view", "view_as", "reshape", "flatten", "unflatten", "transpose", "permute", "t",
        "squeeze", "unsqueeze", "expand", "expand_as", "contiguous", "__getitem__", "narrow",
        "select", "split", "chunk", "unbind", "clone", "detach", "cat", "stack", "relu",
        "relu_", "max_pool2d", "_max_pool2d", "max_pool1d", "dropout", "to", "float", "__get__",
    }
)  # fmt: skip
_NATIVE_FLAGS = ("amx_bf16", "avx512_bf16")


class BF16Compute(NamedTuple):
    """How this machine runs bf16 models: natively, or in fp32 rounded to bf16 per op."""

    native: bool
    reason: str

    @property
    def label(self) -> str:
        return "bf16" if self.native else "fp32, each op's output rounded to bf16"

    def describe(self) -> dict[str, str]:
        return {"bf16_compute": self.label, "bf16_compute_reason": self.reason}


def choose(cpuinfo: Path = Path("/proc/cpuinfo")) -> BF16Compute:
    """Native bf16 only where the CPU has bf16 instructions (AMX or AVX512-BF16)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return BF16Compute(False, f"no {cpuinfo} to read CPU flags from ({platform.machine()})")
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    found = [f for f in _NATIVE_FLAGS if f in flags]
    if found:
        return BF16Compute(True, f"CPU flags {', '.join(found)}")
    return BF16Compute(False, f"CPU flags lack {' and '.join(_NATIVE_FLAGS)}")


def round_bf16_(t: torch.Tensor) -> torch.Tensor:
    """Round an fp32 tensor to bf16 values in place (nearest, ties to even); return it."""
    return t.copy_(t.to(torch.bfloat16))


class BF16Rounding(TorchFunctionMode):
    """While active, every fp32 tensor a torch function returns holds a bf16 value.

    Works eagerly and under torch.compile (dynamo traces the mode; inductor fuses the
    rounding into the op's kernel)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        return round_result(func, func(*args, **(kwargs or {})))


def round_result(func: Any, out: Any) -> Any:
    """Round the fp32 tensors among `func`'s result `out` to bf16 values, in place.

    In place: a fresh result needs no second buffer, and where an op hands back one of its
    inputs (in-place ops, identities) the caller's tensor is the one rounded."""
    if getattr(func, "__name__", "") in _EXACT:
        return out
    for t in out if isinstance(out, tuple | list) else (out,):
        if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
            round_bf16_(t)
    return out


def bf16_rounded(model: torch.nn.Module) -> torch.nn.Module:
    """Make `model` (fp32, holding bf16 values) run under BF16Rounding, in place."""
    return with_mode(model, BF16Rounding, "BF16Rounded")


def with_mode(
    model: torch.nn.Module, mode: Callable[[], TorchFunctionMode], prefix: str = "Moded"
) -> torch.nn.Module:
    """Make `model` run its forward under a fresh `mode()`, in place; a mode given later is
    entered first, i.e. sits below the earlier ones (it sees what they pass on).

    The class is swapped rather than the model wrapped, so parameter names and module
    attributes stay as they were (callers inspect `named_parameters()`)."""
    cls = type(model)

    def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        with mode():
            return cls.forward(self, *args, **kwargs)

    model.__class__ = type(
        f"{prefix}{cls.__name__}", (cls,), {"forward": forward, "__module__": cls.__module__}
    )
    return model
