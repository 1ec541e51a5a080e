"""tt-metal's own packer (PyPI `ttnn`) against `autotune.numerics` and `--emulate tt`, bit for bit.

ttnn ships cp312 wheels only, so it lives in its own Python 3.12 venv without torch
(tests/ttnn_check/setup_venv.sh; .ci/run builds it). This process makes the inputs, writes
them to one .npz, runs tests/ttnn_check/pack.py there once, and compares the bits. No card:
ttnn initialises against a mock single-chip cluster (tests/ttnn_check/mock_n150.yaml) and
only its host packer runs. If the venv is missing or ttnn cannot start, every test here
skips with the reason (pytest -rs prints it).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from autotune.backends.cpu import CPUEmulatedTTBackend
from autotune.numerics import BFP_FORMATS, round_bfp
from autotune.wire import TrialConfig
from studies import get_study, study_names

pytestmark = pytest.mark.ttnn

CHECK_DIR = Path(__file__).resolve().parent / "ttnn_check"
SYNTHETIC = ("random", "wide_range", "ties", "zeros_denormals")
STUDIES = tuple(study_names())  # every registered study, with its shipped trained weights
PRECISIONS = ("fp32", "bf16")
FORMATS = tuple(BFP_FORMATS)


def _venv_dir() -> Path:
    if os.environ.get("AUTOTUNE_TTNN_VENV"):
        return Path(os.environ["AUTOTUNE_TTNN_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "autotune-ci" / "ttnn-py312"


@pytest.fixture(scope="module")
def ttnn_python() -> Path:
    """The ttnn venv's python, or a skip that says why it cannot be used."""
    venv = _venv_dir()
    python = venv / "bin" / "python"
    build = f"build it with {CHECK_DIR / 'setup_venv.sh'} (AUTOTUNE_TTNN_VENV moves it)"
    failed = venv.with_name(venv.name + ".unavailable")  # setup_venv.sh's last failure
    if not python.exists():
        why = f"setup_venv.sh failed: {failed.read_text().strip()}; " if failed.exists() else ""
        pytest.skip(f"ttnn venv not found at {venv}: {why}{build}")
    want = hashlib.sha256((CHECK_DIR / "requirements.txt").read_bytes()).hexdigest()
    stamp = venv / ".requirements.sha256"
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.skip(f"ttnn venv at {venv} is unfinished or for other requirements: {build}")
    probe = subprocess.run(
        [python, CHECK_DIR / "pack.py", "--probe"], capture_output=True, text=True, timeout=300
    )
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"ttnn does not start in {venv}: {tail}")
    return python


# ---- inputs ---------------------------------------------------------------------------------


def _from_bits(sign: np.ndarray, exp: np.ndarray, mant: np.ndarray) -> np.ndarray:
    bits = (sign.astype(np.uint32) << 31) | (exp.astype(np.uint32) << 23) | mant.astype(np.uint32)
    return bits.view(np.float32)


def _wide_range(rng: np.random.Generator) -> np.ndarray:
    """Magnitudes over 2^-100..2^100 and, per block, every shift from 0 past 24 (to zero)."""
    n = (48, 64)
    free = _from_bits(rng.integers(0, 2, n), rng.integers(27, 228, n), rng.integers(0, 1 << 23, n))
    leader = np.repeat(rng.integers(40, 220, (48, 4)), 16, axis=1)
    exp = leader - rng.integers(0, 30, n)
    exp[:, ::16] = leader[:, ::16]  # each block's largest exponent is there
    near = _from_bits(rng.integers(0, 2, n), exp, rng.integers(0, 1 << 23, n))
    return np.concatenate([free, near])


def _ties(rng: np.random.Generator) -> np.ndarray:
    """Exact ties of the host rule for both formats (rows 0-31 for W=7, 32-63 for W=3).

    After the shift by (shared - own exponent) the dropped bits are exactly one half, with
    the kept LSB odd or even, up to saturation (q = 2^W - 1). Half the values also carry
    nonzero bits below the shift: the host rule truncates those away first, so they are
    still ties to it (correct rounding would round them up).
    """
    rows = []
    for w in (7, 3):
        drop = 24 - w
        for _ in range(32):
            top = int(rng.integers(60, 200))
            row = np.empty(32, np.float32)
            for c in range(32):
                # Column 0 of a block is its leader (shift 0); column 1 saturates (q = 2^W - 1).
                s = 0 if c % 16 < 2 else int(rng.integers(0, w + 1))
                q_lo, q_hi = (1 << (w - 1 - s)) if s < w else 0, max(1 << (w - s), 1)
                q = q_hi - 1 if c % 16 == 1 else int(rng.integers(q_lo, q_hi))
                sig = ((q << drop) | (1 << (drop - 1))) << s
                if s and rng.integers(0, 2):
                    sig |= int(rng.integers(1, 1 << s))
                row[c] = _from_bits(
                    np.array(rng.integers(0, 2)), np.array(top - s), np.array(sig & 0x7FFFFF)
                )
            rows.append(row)
    return np.stack(rows)


def _zeros_denormals(rng: np.random.Generator) -> np.ndarray:
    def row(exp_lo: int, exp_hi: int) -> np.ndarray:
        mant = rng.integers(1, 1 << 23, 32)
        return _from_bits(rng.integers(0, 2, 32), rng.integers(exp_lo, exp_hi, 32), mant)

    mixed_zeros = row(100, 130)
    mixed_zeros[::2] = np.where(np.arange(16) % 2, 0.0, -0.0)
    denormal_leader = row(0, 1)
    denormal_leader[::16] = row(10, 11)[:2]
    huge = _from_bits(rng.integers(0, 2, 32), np.full(32, 254), rng.integers(0, 0x7F0000, 32))
    rows = [
        np.zeros(32, np.float32),
        np.full(32, -0.0, np.float32),
        mixed_zeros,
        row(0, 1),  # denormals only
        row(0, 2),  # denormals and the smallest normals
        denormal_leader,  # denormals under a normal leader
        row(1, 3),  # smallest normals: the unpacked values are fp32 denormals
        row(1, 31),  # tiny normals
        huge,  # largest exponent, saturating (no bf16 overflow)
    ]
    return np.stack(rows).astype(np.float32)


def _inputs() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """("precision|case|tensor" -> float32 array, study -> why its weights are missing).

    bf16 entries hold values exact in bf16. A study whose model cannot be built fails its
    own tests only.
    """
    broken: dict[str, str] = {}
    rng = np.random.default_rng(20240608)
    fp32 = {
        "random|values": (rng.standard_normal((64, 96)) * 0.05).astype(np.float32),
        "wide_range|values": _wide_range(rng),
        "ties|values": _ties(rng),
        "zeros_denormals|values": _zeros_denormals(rng),
    }
    for name in STUDIES:
        try:
            model = get_study(name).build_model()
        except Exception as e:
            broken[name] = f"{type(e).__name__}: {e}"
            continue
        for pname, p in model.named_parameters():
            if pname.endswith(".weight"):  # shipped trained weights, native shapes (1-D to 4-D)
                fp32[f"{name}|{pname}"] = p.detach().numpy().astype(np.float32)
    out = {f"fp32|{k}": v for k, v in fp32.items()}
    for k, v in fp32.items():
        out[f"bf16|{k}"] = torch.from_numpy(v).to(torch.bfloat16).float().numpy()
    # Not compared: documents what ttnn does with what numerics refuses (see the last test).
    nonfinite = np.tile(np.linspace(-2, 2, 32, dtype=np.float32), (3, 1))
    nonfinite[:, 3] = [np.inf, -np.inf, np.nan]
    out["special|nonfinite|values"] = nonfinite
    return out, broken


class Packed(tuple):
    """(inputs, ttnn outputs, broken studies), with a short repr for failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self[0])} inputs packed by ttnn>"


@pytest.fixture(scope="module")
def packed(ttnn_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Packed:
    """One run of tests/ttnn_check/pack.py over every input."""
    inputs, broken = _inputs()
    work = tmp_path_factory.mktemp("ttnn")
    np.savez(work / "in.npz", **inputs)
    proc = subprocess.run(
        [ttnn_python, CHECK_DIR / "pack.py", work / "in.npz", work / "out.npz"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"pack.py failed:\n{proc.stderr[-3000:]}"
    with np.load(work / "out.npz") as out:
        return Packed((inputs, {k: out[k] for k in out.files}, broken))


# ---- comparisons ----------------------------------------------------------------------------


def _hex(x: np.ndarray) -> str:
    return f"{float(x)!r} (0x{int(np.asarray(x, np.float32).view(np.uint32)):08x})"


def _mismatches(what: str, inp: np.ndarray, ours: np.ndarray, ttnn: np.ndarray) -> list[str]:
    assert ours.shape == ttnn.shape == inp.shape, (what, ours.shape, ttnn.shape, inp.shape)
    a = np.ascontiguousarray(ours, np.float32).view(np.uint32)
    b = np.ascontiguousarray(ttnn, np.float32).view(np.uint32)
    bad = np.argwhere(a != b)
    if not len(bad):
        return []
    lines = [f"{what}: {len(bad)} of {a.size} values differ"]
    for i in (tuple(int(j) for j in row) for row in bad[:6]):
        lines.append(f"  at {i}: input {_hex(inp[i])}, ours {_hex(ours[i])}, ttnn {_hex(ttnn[i])}")
    return lines


def _tensors(packed: Packed, precision: str, case: str) -> list[str]:
    inputs, _, broken = packed
    if case in broken:
        pytest.fail(f"study {case}: build_model() failed: {broken[case]}")
    keys = [k for k in inputs if k.startswith(f"{precision}|{case}|")]
    assert keys, f"no inputs for {precision}|{case}"
    return keys


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", SYNTHETIC + STUDIES)
def test_round_bfp_matches_ttnn(packed, case: str, precision: str, fmt: str):
    """`round_bfp` (host rule) gives exactly ttnn's packed-and-unpacked values.

    bf16 inputs go in as torch bf16 tensors (as a bf16-cast model's weights would), and ttnn
    packs them two ways: from the fp32 values, and from a bfloat16 tensor by `to_dtype`.
    """
    inputs, out, _ = packed
    problems = []
    for key in _tensors(packed, precision, case):
        x = torch.from_numpy(inputs[key])
        if precision == "bf16":
            x = x.to(torch.bfloat16)
        ours = round_bfp(x, fmt).float().numpy()
        problems += _mismatches(f"{fmt} {key}", inputs[key], ours, out[f"{fmt}|{key}"])
        if precision == "bf16":
            via = out[f"{fmt}|{key}|to_dtype"]
            problems += _mismatches(f"{fmt} {key} via to_dtype", inputs[key], ours, via)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("study_name", STUDIES)
def test_emulated_model_weights_match_ttnn(packed, study_name: str, fmt: str):
    """An `--emulate tt` model holds what the card holds: ttnn's packing of the bf16-cast
    weights (the recipe casts the model to bf16 before `apply_weight_dtype_overrides`)."""
    inputs, out, _ = packed
    _tensors(packed, "bf16", study_name)
    study = get_study(study_name)
    linear = [w.name for w in study.weights if w.kind == "linear"]
    assert linear, f"{study_name} has no linear weight: the dtype map would change nothing"
    config = TrialConfig(
        model=study_name,
        backend=CPUEmulatedTTBackend.name,
        batch_size=1,
        activation_dtype="bf16",
        weight_dtypes=tuple((name, fmt) for name in linear),
    )
    model = CPUEmulatedTTBackend().prepare(study.build_model(), config)
    params = dict(model.named_parameters())
    problems = []
    for name in linear:
        key = f"bf16|{study_name}|{name}"
        held = params[name].detach().float().numpy()
        ttnn = out[f"{fmt}|{key}"]
        problems += _mismatches(f"{fmt} {study_name} {name}", inputs[key], held, ttnn)
    assert not problems, "\n".join(problems)


def test_nonfinite_blocks_differ_as_documented(packed):
    """Where the two knowingly differ (DESIGN.md section 5): round_bfp refuses inf/NaN,
    while ttnn keeps them and zeroes the other values of their 16-value block."""
    inputs, out, _ = packed
    x = inputs["special|nonfinite|values"]
    with pytest.raises(ValueError, match="NaN/inf"):
        round_bfp(torch.from_numpy(x), "bfp_bf8")
    for fmt in FORMATS:
        got = out[f"{fmt}|special|nonfinite|values"]
        others = np.delete(got[:, :16], 3, axis=1)
        assert np.all(others == 0), (fmt, got[:, :16])
        assert got[0, 3] == np.inf and got[1, 3] == -np.inf and np.isnan(got[2, 3]), got[:, 3]
        # The block without a non-finite value is packed as usual.
        clean = round_bfp(torch.from_numpy(x[:, 16:]), fmt).numpy()
        assert not _mismatches(f"{fmt} clean block", x[:, 16:], clean, got[:, 16:])
