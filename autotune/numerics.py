"""Exact emulation of tt-metal's block-float formats (bfloat8_b, bfloat4_b) in torch.

Why: a weight stored as bfp_bf8/bfp_bf4 on the card is not the fp32 weight, and an
accuracy estimate made on the CPU is only worth something if it sees the same values
the card holds. `round_bfp` returns exactly those values, in the input's dtype, so a
model can be evaluated on the CPU "as if" its weights had been packed.

Format: 16 consecutive values along the last dimension (one row of a 16x16 face of a
32x32 tile) share one 8-bit exponent; each value keeps a sign and a W-bit magnitude
with an explicit leading bit (W = 7 for bfp_bf8, 3 for bfp_bf4).
"""

from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F

__all__ = ["BFP_FORMATS", "BFP_RULES", "BLOCK_SIZE", "round_bfp"]

BFP_FORMATS = MappingProxyType({"bfp_bf8": 7, "bfp_bf4": 3})
"""Format name -> W, the magnitude bits kept per value (leading bit included)."""

BFP_RULES = ("host", "device")
"""Which packer's rounding to emulate; see `round_bfp`."""

BLOCK_SIZE = 16
"""Values sharing one exponent, consecutive along the last dimension."""

_SIG_BITS = 24  # fp32 significand with the hidden bit made explicit
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def round_bfp(x: torch.Tensor, fmt: str, rule: str = "host") -> torch.Tensor:
    """Return the values the card holds after packing `x` as `fmt`, in x's shape/dtype.

    rule="host" (the default) is tt-metal's host packer converting fp32: per block of
    16 values along the last dim, shared exponent = the largest fp32 biased exponent;
    each significand (hidden bit explicit) is shifted right by (shared - own exponent),
    truncating, then rounded to W bits round-to-nearest ties-to-even, saturating at
    2^W - 1 (the shared exponent never moves). rule="device" is the card's own packer:
    x is first rounded to bf16 (nearest-even), then the same pipeline runs with ties
    rounded away from zero. The two differ, so any result derived from this function
    must record which rule produced it.

    Behaviour at the edges (chosen to match what the card can hold):
    - the input is first cast to fp32 (fp64 rounds to nearest); the output is cast back
      to x's dtype. Every bfp value is exact in fp32, fp64 and bf16; fp16 output is the
      fp16 rounding of it, which differs only for blocks whose largest magnitude is
      below about 2^-18 (fp16's subnormal range).
    - a last dim that is not a multiple of 16 is zero-padded (zeros never raise the
      shared exponent) and the padding dropped; 0-d and 1-d tensors are one row.
    - +-0 gives +0.0, and so does any value whose magnitude rounds to 0: the card has
      no signed zero.
    - fp32 denormals (biased exponent 0) are flushed to +0.0, as tt-metal's packer
      does (`exp == 0` returns 0). Taking them literally with a hidden bit of 0 would
      halve them instead, since their true exponent is 1, not 0.
    - NaN or +-inf (also a finite fp32 that overflows bf16 under rule="device") raise
      ValueError: the format has no encoding for them and the packer's output would
      be garbage.
    - the result never requires grad; x is not modified.

    Raises ValueError for an unknown fmt or rule, TypeError for a non-float dtype.
    """
    if fmt not in BFP_FORMATS:
        raise ValueError(f"unknown bfp format {fmt!r}; expected one of {list(BFP_FORMATS)}")
    if rule not in BFP_RULES:
        raise ValueError(f"unknown bfp rounding rule {rule!r}; expected one of {list(BFP_RULES)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"round_bfp needs a float tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        return x.detach().clone()

    x32 = x.detach().to(torch.float32)
    if rule == "device":
        x32 = x32.to(torch.bfloat16).to(torch.float32)

    width = x32.shape[-1] if x32.dim() else 1
    rows = x32.reshape(-1, width)
    pad = -width % BLOCK_SIZE
    if pad:
        rows = F.pad(rows, (0, pad))
    blocks = rows.reshape(rows.shape[0], -1, BLOCK_SIZE).contiguous()

    out = _round_blocks(blocks, BFP_FORMATS[fmt], away=rule == "device")
    out = out.reshape(rows.shape)
    if pad:
        out = out[:, :width]
    return out.reshape(x.shape).to(x.dtype)


def _round_blocks(blocks: torch.Tensor, w: int, *, away: bool) -> torch.Tensor:
    """Round contiguous fp32 [..., 16] blocks; integer bit ops only, no element loop."""
    bits = blocks.view(torch.int32)
    exp = (bits >> 23) & 0xFF
    shared = exp.amax(dim=-1, keepdim=True)
    if bool((shared == 0xFF).any()):
        n_bad = int((exp == 0xFF).sum())
        where = " after the device rule's bf16 pre-rounding" if away else ""
        raise ValueError(
            f"round_bfp: input has {n_bad} NaN/inf value(s){where}; block-float cannot encode them"
        )

    sig = (bits & 0x7FFFFF) | 0x800000  # hidden bit made explicit
    sig.masked_fill_(exp == 0, 0)  # zero and denormal: flushed to 0
    # Shifts of 24..31 already give 0; clamping keeps the shift defined.
    mag = sig.bitwise_right_shift_((shared - exp).clamp_(max=31))

    drop = _SIG_BITS - w
    half = 1 << (drop - 1)
    if away:
        mag += half
    else:  # ties-to-even: add half - 1, plus 1 more when the kept LSB is odd
        mag += ((mag >> drop) & 1) + (half - 1)
    q = (mag >> drop).clamp_(max=(1 << w) - 1)

    neg = bits >> 31  # 0 or -1 (arithmetic shift): conditional negate, no -0
    q = (q ^ neg) - neg

    # scale = 2^(shared - 127 - (w - 1)), built from exponent bits; shared == 0 only
    # for all-zero/denormal blocks, whose q are all 0, so the 0.0 "scale" is harmless.
    scale = (shared << 23).view(torch.float32) * (2.0 ** -(w - 1))
    return q.to(torch.float32).mul_(scale)
