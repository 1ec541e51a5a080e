"""Weight-only quantized Linear layers: int8 and fp8 e4m3 weights, per-output-channel scales.

Native torch, no torchao: a quantized weight is stored in its narrow format with one scale
per output channel (row), and dequantized in the forward pass (torch.compile fuses the cast
and the scaling into one kernel ahead of the matmul):

    y = x @ (q.to(x.dtype) * scale[:, None]).T + bias        (q * scale[:, None] ~= W)

This is what torchao's ``int8_weight_only`` and ``float8_weight_only`` compute. The math runs
in the activation dtype; only the bytes of the weight shrink (2x vs bf16, 4x vs fp32). The
scale is applied to the weight, not to the matmul's output: x @ q.T with q up to 448 and
thousands of inputs (MNIST's fc1 has 9216) overflows fp16. Why not ``torch._scaled_mm`` for fp8: it
multiplies fp8 by fp8, so the activations would be quantized too (W8A8, not weight-only),
and it needs both matrix dimensions divisible by 16 (MNIST's fc2 has 10 outputs).

Scales are symmetric (no zero point): int8 uses [-127, 127], so that q and -q both exist;
fp8 e4m3 (``torch.float8_e4m3fn``) uses its full finite range, [-448, 448].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autotune.backends._torch_dtypes import resolve_weight_map

INT8_MAX = 127.0
FP8_E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
#: weight-map values quantized by this module.
FORMATS = ("int8", "fp8_e4m3")


def _row_scale(w: torch.Tensor, qmax: float) -> torch.Tensor:
    amax = w.abs().amax(dim=1)
    # An all-zero row quantizes to zeros with any scale; 1 keeps the division finite.
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 [out, in], scale fp32 [out]) with W ~= q * scale[:, None], round to nearest."""
    w = w.detach().float()
    scale = _row_scale(w, INT8_MAX)
    q = torch.round(w / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def quantize_fp8_e4m3(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q float8_e4m3fn [out, in], scale fp32 [out]): each row's largest magnitude maps to
    448; the cast rounds to nearest even (e4m3fn has no inf: the clamp keeps it finite)."""
    w = w.detach().float()
    scale = _row_scale(w, FP8_E4M3_MAX)
    q = (w / scale[:, None]).clamp_(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


QUANTIZERS = {"int8": quantize_int8, "fp8_e4m3": quantize_fp8_e4m3}


class WeightOnlyLinear(nn.Module):
    """A Linear whose weight is stored quantized (`fmt`) and dequantized per forward pass.

    `dtype` is the activation dtype: the scale and bias are kept in it, and the matmul runs
    in it. Built from the fp32 weight, so rounding happens once, from full precision.
    """

    def __init__(self, linear: nn.Linear, fmt: str, dtype: torch.dtype) -> None:
        super().__init__()
        if fmt not in QUANTIZERS:
            raise ValueError(f"unknown weight-only format {fmt!r} (formats: {', '.join(FORMATS)})")
        q, scale = QUANTIZERS[fmt](linear.weight)
        self.fmt = fmt
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.to(dtype))
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.register_buffer("bias", bias)

    def dequantized(self) -> torch.Tensor:
        return self.qweight.to(self.scale.dtype) * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.qweight.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}"


def weight_only_layers(
    model: nn.Module, weight_map: dict[str, str], dtype: torch.dtype
) -> dict[str, WeightOnlyLinear]:
    """{module name: its quantized replacement} for each Linear the map sets to a FORMATS
    value. Call on the fp32 model, before casting it (a cast would also convert the float8
    buffers, which are floating point to torch), then `install` the result."""
    modules = dict(model.named_modules())
    names = [name for name, _ in model.named_parameters()]
    found = {}
    for weight, fmt in resolve_weight_map(names, weight_map).items():
        if fmt not in FORMATS:
            continue
        module_name = weight.rsplit(".", 1)[0] if "." in weight else ""
        module = modules.get(module_name)
        if not isinstance(module, nn.Linear) or not weight.endswith(".weight"):
            raise ValueError(f"{weight}: {fmt} weights are for nn.Linear weights only")
        found[module_name] = WeightOnlyLinear(module, fmt, dtype)
    return found


def install(model: nn.Module, layers: dict[str, WeightOnlyLinear]) -> nn.Module:
    for name, layer in layers.items():
        model.set_submodule(name, layer)
    return model
