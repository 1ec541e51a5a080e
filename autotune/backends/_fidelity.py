"""Tenstorrent math fidelity on the CPU: a MODEL of the matrix engine, not a bit-exact oracle.

What the card does (Wormhole B0; the sources are Tenstorrent's, cited per fact):
- A matmul runs as ``MVMUL``: ``Dst += SrcB @ SrcA``, SrcB an 8x16 block of the activation
  (in0), SrcA a 16x16 block of the weight (in1) (tt-isa-documentation
  ``WormholeB0/TensixTile/TensixCoprocessor/MVMUL.md``; tt-metal
  ``tech_reports/matrix_engine/matrix_engine.md``: "8x16 ... in0, and 16x16 ... in1").
- Its multipliers take at most 5 bits of SrcA mantissa and 7 of SrcB (implicit 1 included),
  so a full bf16 product takes up to four *fidelity phases* (MVMUL.md; ``SrcASrcB.md``,
  "Fidelity phases (floating-point)", which gives the bits for BF16 operands -- BFP8/BFP4 are
  unpacked losslessly to BF16 first):

      phase   SrcA (weight) bits                    SrcB (activation) bits
      0       implicit 1 + top 4 mantissa bits      implicit 1 + top 6 mantissa bits
      1       remaining 3 mantissa bits             implicit 1 + top 6 mantissa bits
      2       implicit 1 + top 4 mantissa bits      remaining 1 mantissa bit
      3       remaining 3 mantissa bits             remaining 1 mantissa bit

  The ISA's functional model (``ELWMUL.md``: ``SrcAFidelityBits``, ``SrcBFidelityBits``)
  takes the high part by masking the fp32 pattern (``0xfff80000`` for SrcA, ``0xfffe0000``
  for SrcB: truncation towards zero) and the low part as the exact remainder; phase bit 0
  picks SrcA's part, bit 1 SrcB's. tt-buda ``docs/public/dataformats.rst`` ("Math Fidelity")
  says the same in words: phases consume the bits from most to least significant.
- A fidelity runs the first N phases: tt-llk ``llk_defs.h`` ``MathFidelity {LoFi = 0,
  HiFi2 = 2, HiFi3 = 3, HiFi4 = 4}`` (the phase count; LoFi is the base pass alone), so LoFi
  = phase 0, HiFi2 = 0-1, HiFi3 = 0-2, HiFi4 = 0-3. HiFi4 is therefore the exact bf16 product.
- Each phase's 16-long dot products are added to Dst. With ``fp32_dest_acc_en`` Dst is FP32;
  without it, BF16: each addition is rounded to bf16 (MVMUL.md's functional model,
  ``RoundToBF16``).

What is modelled, not known: the ISA says its float model is "a rough guide ... precision could
be either lower or higher"; the order in which ttnn's kernels walk K and the phases (here:
16-wide K chunks in order, all kept phases of a chunk before the next chunk; for a
convolution, chunks of 16 input channels with all kernel taps), and ttnn's per-op defaults.
Accumulation inside one 16-long product is fp32 here.

Vectorised: each operand is split once into its high and low parts, a kept phase is one
matmul of parts (LoFi one, HiFi4 four), and with fp32 Dst the phases' matmuls are summed. A
bf16 Dst is an ordered loop over K/16 chunks x phases (slow on large K: opt-in only).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from autotune.backends.tt_options import PHASES

# ELWMUL.md SrcAFidelityBits / SrcBFidelityBits: sign, exponent, implicit 1, then 4 (SrcA) or
# 6 (SrcB) mantissa bits of the fp32 pattern.
SRCA_HIGH_MASK = -0x80000  # 0xfff80000 as int32
SRCB_HIGH_MASK = -0x20000  # 0xfffe0000 as int32
CHUNK = 16  # the K of one MVMUL (SrcA is 16x16)

#: (SrcA part, SrcB part) per phase: 0 = high bits, 1 = low bits (phase bit 0: SrcA, bit 1: SrcB).
_PHASE_PARTS = ((0, 0), (1, 0), (0, 1), (1, 1))


def split(x: torch.Tensor, mask: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) fp32 parts of `x` (bf16 values in fp32, or bf16): high = the bits the
    mask keeps (truncation toward zero), low = the exact remainder."""
    x = x.float().contiguous()
    high = (x.view(torch.int32) & mask).view(torch.float32)
    return high, x - high


def phases(fidelity: str) -> tuple[tuple[int, int], ...]:
    """The (SrcA part, SrcB part) of each phase `fidelity` runs."""
    return _PHASE_PARTS[: PHASES[fidelity]]


def matmul(a: torch.Tensor, w: torch.Tensor, fidelity: str, fp32_dest: bool = True) -> torch.Tensor:
    """``a @ w`` (a: [..., K] activations = SrcB, w: [K, N] weights = SrcA) as the matrix
    engine computes it at `fidelity`, accumulating in an fp32 (or bf16) Dst; fp32 result."""
    a_parts = split(a, SRCB_HIGH_MASK)
    w_parts = split(w, SRCA_HIGH_MASK)
    kept = phases(fidelity)
    if fp32_dest:
        out = None
        for wa, ab in kept:
            part = a_parts[ab] @ w_parts[wa]
            out = part if out is None else out.add_(part)
        return out
    return _bf16_dest(a_parts, w_parts, kept)


_CHUNKS_PER_BMM = 64  # chunks whose partial products are made in one batched matmul


def _bf16_dest(
    a_parts: tuple[torch.Tensor, torch.Tensor],
    w_parts: tuple[torch.Tensor, torch.Tensor],
    kept: tuple[tuple[int, int], ...],
) -> torch.Tensor:
    k, n = w_parts[0].shape
    lead = a_parts[0].shape[:-1]
    chunks = math.ceil(k / CHUNK)
    pad = chunks * CHUNK - k
    # [chunks, M, 16] activations and [chunks, 16, N] weights: one small matmul per chunk
    # would be slow, so a batched matmul makes the partial products of many chunks at once.
    a3 = [
        F.pad(p.reshape(-1, k), (0, pad)).reshape(-1, chunks, CHUNK).transpose(0, 1)
        for p in a_parts
    ]
    w3 = [F.pad(p, (0, 0, 0, pad)).reshape(chunks, CHUNK, n) for p in w_parts]
    acc = torch.zeros(a3[0].shape[1], n, dtype=torch.bfloat16)
    for start in range(0, chunks, _CHUNKS_PER_BMM):
        block = slice(start, start + _CHUNKS_PER_BMM)
        partials = [torch.bmm(a3[ab][block], w3[wa][block]) for wa, ab in kept]
        for c in range(partials[0].shape[0]):  # Dst += each phase's product, rounded each time
            for part in partials:
                acc = part[c].add(acc.float()).to(torch.bfloat16)
    return acc.float().reshape(*lead, n)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fidelity: str, fp32_dest: bool
) -> torch.Tensor:
    out = matmul(x, weight.t(), fidelity, fp32_dest)
    return out if bias is None else out + bias.float()


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    fidelity: str,
    fp32_dest: bool,
) -> torch.Tensor:
    """conv2d as the card's matmul of activation patches (SrcB) by weights (SrcA).

    A patch holds the activation's values, so splitting the activation before the
    convolution splits every patch: each kept phase is one convolution of parts. With a bf16
    Dst the sum is rounded after each phase of each chunk of 16 input channels (all kernel
    taps of a chunk at once: a coarser order than the card's 16-wide K chunks)."""
    x_parts = split(x, SRCB_HIGH_MASK)
    w_parts = split(weight, SRCA_HIGH_MASK)
    kept = phases(fidelity)

    def conv(xp: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
        return F.conv2d(xp, wp, None, stride, padding, dilation, groups)

    if fp32_dest:
        out = None
        for wa, ab in kept:
            part = conv(x_parts[ab], w_parts[wa])
            out = part if out is None else out.add_(part)
    else:
        if groups != 1:
            raise NotImplementedError("fidelity emulation: grouped conv2d with a bf16 Dst")
        acc = None
        for c in range(0, x.shape[1], CHUNK):
            for wa, ab in kept:
                part = conv(x_parts[ab][:, c : c + CHUNK], w_parts[wa][:, c : c + CHUNK])
                acc = part if acc is None else acc.float().add_(part)
                acc = acc.to(torch.bfloat16)
        out = acc.float()
    return out if bias is None else out + bias.float().view(1, -1, 1, 1)


class Fidelity(TorchFunctionMode):
    """While active, linear, conv2d and matmuls compute as the matrix engine does at
    `fidelity` (every op tt-mlir gives a compute kernel config: math_fidelity is graph-wide).

    Inputs hold bf16 values (in bf16 or fp32 tensors); the result has the activation's
    dtype (bf16 rounding of the output is the caller's, as for every op)."""

    def __init__(self, fidelity: str, fp32_dest: bool) -> None:
        super().__init__()
        self.fidelity = fidelity
        self.fp32_dest = fp32_dest

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _args(args, kwargs, ("input", "weight", "bias"), (None,))
            out = linear(x, weight, bias, self.fidelity, self.fp32_dest)
            return out.to(x.dtype)
        if func is F.conv2d:
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            x, weight, bias, stride, padding, dilation, groups = _args(
                args, kwargs, names, (None, 1, 0, 1, 1)
            )
            out = conv2d(
                x, weight, bias, stride, padding, dilation, groups, self.fidelity, self.fp32_dest
            )
            return out.to(x.dtype)
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm):
            a, b = args[0], args[1]
            if a.dim() >= 2 and b.dim() >= 2 and a.is_floating_point():
                if b.dim() == 2 or self.fp32_dest:  # the parts' matmuls broadcast as @ does
                    return matmul(a, b, self.fidelity, self.fp32_dest).to(a.dtype)
                # bf16 Dst, batched: one [K, N] operand per batch element
                lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
                a3 = a.expand(*lead, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
                b3 = b.expand(*lead, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
                outs = [matmul(a3[i], b3[i], self.fidelity, False) for i in range(len(a3))]
                return torch.stack(outs).reshape(*lead, a.shape[-2], b.shape[-1]).to(a.dtype)
        return func(*args, **kwargs)


def _args(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: tuple) -> list[Any]:
    """Positional-or-keyword arguments by name; the trailing ones default to `defaults`."""
    values = list(args) + [kwargs.get(n) for n in names[len(args) :]]
    first_default = len(names) - len(defaults)
    for i in range(first_default, len(names)):
        if i >= len(args) and names[i] not in kwargs:
            values[i] = defaults[i - first_default]
    return values
