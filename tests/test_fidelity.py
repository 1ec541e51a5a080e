"""The math-fidelity model of the matrix engine (`autotune.backends._fidelity`).

There is no card and no bit-exact oracle here: the model is checked on products worked out by
hand from the bit tables of tt-isa-documentation (SrcASrcB.md, "Fidelity phases") and on the
properties Tenstorrent documents: HiFi4 is the full bf16 product, LoFi drops the low mantissa
bits of both operands (truncating), block-float weights need fewer phases.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autotune.backends import _fidelity as fd
from autotune.backends.cpu import CPUEmulatedTTBackend, card_model
from autotune.numerics import round_bfp
from autotune.wire import TrialConfig
from studies import get_study

FIDELITIES = ("hifi4", "hifi3", "hifi2", "lofi")


def bf16(*values: float) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(t.bfloat16().float(), t), "test values must be bf16 values"
    return t


def product(a: float, w: float, fidelity: str, fp32_dest: bool = True) -> float:
    """a (activation, SrcB) times w (weight, SrcA), K = 1."""
    return fd.matmul(bf16(a).view(1, 1), bf16(w).view(1, 1), fidelity, fp32_dest).item()


def test_phases_by_hand():
    # 1 + 2^-7: the last bf16 mantissa bit is in SrcB's low part (bit 7 of 7) and in SrcA's
    # low part (bits 5-7), so each phase adds one term of (1 + 2^-7)(1 + 2^-7):
    e = 2.0**-7
    assert product(1 + e, 1 + e, "lofi") == 1.0  # phase 0: high x high
    assert product(1 + e, 1 + e, "hifi2") == 1 + e  # + SrcA low x SrcB high
    assert product(1 + e, 1 + e, "hifi3") == 1 + 2 * e  # + SrcA high x SrcB low
    assert product(1 + e, 1 + e, "hifi4") == (1 + e) ** 2  # + low x low: exact
    # Bits inside phase 0 (SrcA: 4 mantissa bits, SrcB: 6) are exact at LoFi.
    assert product(1 + 63 / 64, 1 + 15 / 16, "lofi") == (1 + 63 / 64) * (1 + 15 / 16)
    # SrcA bit 5 is not: truncated towards zero, sign kept, any exponent.
    assert product(1.0, -(1 + 2.0**-5) * 2.0**-20, "lofi") == -(2.0**-20)
    assert product(3.0, -(1 + 2.0**-5) * 2.0**-20, "hifi2") == 3.0 * -(1 + 2.0**-5) * 2.0**-20
    # SrcB (the activation) keeps 6 bits: bit 7 only from phase 2 (HiFi3) on.
    assert product(1 + e, 1.0, "hifi2") == 1.0 and product(1 + e, 1.0, "hifi3") == 1 + e


def test_hifi4_is_the_full_bf16_product():
    torch.manual_seed(0)
    a = torch.randn(4096).bfloat16().float()
    w = torch.randn(4096).bfloat16().float()
    for x, y in ((a, w), (a * 2.0**-30, w * 2.0**40)):  # scaled: still bf16 values
        exact = x * y  # exact in fp32: 8 x 8 significand bits
        got = torch.stack([fd.matmul(x[i].view(1, 1), y[i].view(1, 1), "hifi4") for i in range(64)])
        assert torch.equal(got.flatten(), exact[:64])
    # A whole matmul: the bf16 product accumulated in fp32, as torch does it.
    x, y = torch.randn(8, 100).bfloat16().float(), torch.randn(100, 12).bfloat16().float()
    torch.testing.assert_close(fd.matmul(x, y, "hifi4"), x @ y, rtol=1e-6, atol=1e-5)


def test_lofi_error_is_the_documented_truncation():
    """LoFi keeps 1+4 bits of the weight and 1+6 of the activation, truncating: each product
    shrinks in magnitude, at worst when the dropped bits are all ones on the smallest
    mantissa: the weight's 3 bits (7/128 of 1 + 7/128), the activation's 1 (1/128 of
    1 + 1/128)."""
    torch.manual_seed(1)
    a = torch.randn(20000).bfloat16().float()
    w = torch.randn(20000).bfloat16().float()
    a_hi, _ = fd.split(a, fd.SRCB_HIGH_MASK)
    w_hi, _ = fd.split(w, fd.SRCA_HIGH_MASK)
    lofi = a_hi * w_hi  # what phase 0 multiplies, elementwise
    shrink = 1 - lofi / (a * w)
    bound = 1 - (1 - 7 / 135) * (1 - 1 / 129)  # about 5.9%
    assert float(shrink.min()) >= 0.0 and float(shrink.max()) <= bound * (1 + 1e-6)
    assert float(shrink.max()) > 0.95 * bound and float(shrink.mean()) > 2.0**-6
    # And matmul at LoFi is the sum of exactly those products.
    x, y = a[:64].view(4, 16), w[:64].view(16, 4)
    torch.testing.assert_close(
        fd.matmul(x, y, "lofi"), a_hi[:64].view(4, 16) @ w_hi[:64].view(16, 4)
    )


def test_block_float_weights_need_fewer_phases():
    """tt-isa-documentation SrcASrcB.md: BFP4 operands need phase 0 only. A bfp_bf4 weight
    has at most 3 significant bits, all in SrcA's high part: SrcA's low phases add nothing."""
    torch.manual_seed(2)
    x = torch.randn(8, 64).bfloat16().float()
    w = round_bfp(torch.randn(64, 32).t().contiguous(), "bfp_bf4").t().float()
    assert torch.equal(fd.matmul(x, w, "lofi"), fd.matmul(x, w, "hifi2"))
    assert torch.equal(fd.matmul(x, w, "hifi3"), fd.matmul(x, w, "hifi4"))
    assert not torch.equal(fd.matmul(x, w, "lofi"), fd.matmul(x, w, "hifi4"))  # SrcB's bit


def test_bf16_destination_rounds_each_accumulation():
    """Without fp32_dest_acc_en Dst is bf16 (MVMUL.md): each 16-wide chunk's sum is added and
    rounded. 256 + 1 rounds back to 256 in bf16 (ties to even); fp32 keeps counting."""
    chunks = 5
    x = torch.ones(1, 16 * chunks)
    w = torch.zeros(16 * chunks, 1)
    w[0, 0] = 256.0
    for c in range(1, chunks):
        w[16 * c, 0] = 1.0
    assert fd.matmul(x, w, "hifi4", fp32_dest=True).item() == 256.0 + chunks - 1
    assert fd.matmul(x, w, "hifi4", fp32_dest=False).item() == 256.0
    # Within one chunk the 16 products are summed before Dst: 256 + 1 + 1 = 258 is kept.
    w2 = torch.zeros(16, 1)
    w2[0, 0], w2[1, 0], w2[2, 0] = 256.0, 1.0, 1.0
    assert fd.matmul(torch.ones(1, 16), w2, "hifi4", fp32_dest=False).item() == 258.0


@pytest.mark.parametrize("fp32_dest", [True, False])
def test_linear_conv_and_matmul_under_the_mode(fp32_dest):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 10, 10).bfloat16().float()
    wc = torch.randn(5, 3, 3, 3).bfloat16().float()
    xl, wl = torch.randn(4, 40).bfloat16().float(), torch.randn(6, 40).bfloat16().float()
    for fidelity in FIDELITIES:
        with fd.Fidelity(fidelity, fp32_dest):
            conv = F.conv2d(x, wc, None, 2, 1)
            lin = F.linear(xl, wl)
            mm = xl @ wl.t()
        exp_lin = fd.linear(xl, wl, None, fidelity, fp32_dest)
        assert torch.equal(lin, exp_lin) and torch.equal(mm, exp_lin)
        assert conv.shape == (2, 5, 5, 5)
        if fidelity == "hifi4" and fp32_dest:
            torch.testing.assert_close(conv, F.conv2d(x, wc, None, 2, 1), rtol=1e-6, atol=1e-5)
    # Convolution patches hold the activation's values: the conv of the parts equals the
    # im2col matmul of the parts.
    cols = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)
    flat = fd.matmul(cols, wc.reshape(5, -1).t(), "lofi", True)
    ref = flat.transpose(1, 2).reshape(2, 5, 5, 5)
    got = fd.conv2d(x, wc, None, 2, 1, 1, 1, "lofi", True)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)


@pytest.fixture(scope="module")
def mnist_batch() -> tuple[torch.nn.Module, torch.Tensor]:
    study = get_study("mnist")
    images, _ = study.eval_data()
    return study, images[:256]


def emulated(study, images, native: bool, level: int = 0, **knobs: str) -> torch.Tensor:
    config = TrialConfig(
        model="mnist",
        backend="cpu-emulate-tt",
        batch_size=256,
        optimization_level=level,
        activation_dtype="bf16",
        knobs=tuple(knobs.items()),
    )
    backend = CPUEmulatedTTBackend(native_bf16=native)
    model = backend.prepare(study.build_model(), config)
    with torch.no_grad():
        return model(backend.to_device(images, config)).float()


@pytest.mark.parametrize("native", [False, True])
def test_mnist_outputs_follow_the_fidelity(mnist_batch, native):
    """On the seed CNN: unset/hifi4 is the plain bf16 emulation; each phase less moves the
    logits further from fp32."""
    study, images = mnist_batch
    with torch.no_grad():
        fp32 = study.build_model().eval()(images)
    plain = card_model(study.build_model(), {}, "host", native)
    with torch.no_grad():
        plain_out = plain(images.bfloat16() if native else images.bfloat16().float()).float()
    err = {}
    for fidelity in FIDELITIES:
        out = emulated(study, images, native, math_fidelity=fidelity, fp32_dest_acc_en="unset")
        err[fidelity] = float((out - fp32).abs().mean())
        if fidelity == "hifi4":
            assert torch.equal(out, plain_out)
    # HiFi3 drops only low x low (1 x 3 bits): within the bf16 noise of HiFi4.
    assert abs(err["hifi3"] - err["hifi4"]) < 0.1 * err["hifi4"]
    assert max(err["hifi4"], err["hifi3"]) < err["hifi2"] < err["lofi"]
    assert err["lofi"] > 5 * err["hifi4"]
    default = emulated(study, images, native, math_fidelity="ttnn_default")
    assert torch.equal(default, emulated(study, images, native, math_fidelity="lofi"))


def test_mnist_fidelity_under_inductor(mnist_batch):
    """Optimization level 1 compiles the emulated model: the model survives compilation."""
    study, images = mnist_batch
    eager = emulated(study, images[:32], False, 0, math_fidelity="lofi")
    compiled = emulated(study, images[:32], False, 1, math_fidelity="lofi")
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=2e-2)
