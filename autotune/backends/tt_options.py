"""tt-xla's compile options that autotune searches, spelled exactly as tt-xla parses them.

Source: tt-xla ``pjrt_implementation/src/api/compile_options.cc`` (``CompileOptions::parse``)
and ``inc/api/compile_options.h`` at snapshot 95c1c1ce (2026-08-21); the values of
``math_fidelity`` are checked in ``compile_options_parser.cc`` (``parseMathFidelity``), booleans
by ``parseBoolOption`` (true/1/yes/on, false/0/no/off, case-insensitive). The plugin receives a
string-to-string map, so every value here is the string sent. Like tt-xla's own
``tests/infra/testers/compiler_config.py`` (``to_jax_compiler_options``), an option is sent only
when it differs from tt-xla's default; the exceptions are ``optimization_level`` and
``enable_trace`` (always sent, as mnist_performant.py does) and ``math_fidelity`` (always sent
when the config names one, so that an export says which fidelity it ran).

Tuner side: no torch. The CPU emulation of fidelity is ``autotune.backends._fidelity``.
"""

from __future__ import annotations

from typing import Any

from autotune.backends.base import Knob

#: The fidelities, most precise first (the order the sampler steps down). tt-llk
#: ``llk_defs.h``: ``MathFidelity {LoFi = 0, HiFi2 = 2, HiFi3 = 3, HiFi4 = 4}``, the number of
#: multiplier phases per product (LoFi: one); tt-metal ``tech_reports/matrix_engine/
#: matrix_engine.md``: Wormhole matmul 4 TFLOPS LoFi, 2 HiFi2, 1.33 HiFi3, 1 HiFi4 (1 GHz).
FIDELITIES = ("hifi4", "hifi3", "hifi2", "lofi")
#: "ttnn_default": the compiler leaves each op's fidelity to ttnn (compile_options.h).
TTNN_DEFAULT = "ttnn_default"
#: Matrix-engine cycles per product, relative to LoFi (matrix_engine.md).
PHASES = {"lofi": 1, "hifi2": 2, "hifi3": 3, "hifi4": 4}


def matmul_rate(fidelity: str) -> float:
    """The card's matmul throughput at `fidelity` relative to HiFi4 (LoFi 4, HiFi2 2,
    HiFi3 1.33: matrix_engine.md's TFLOPS, i.e. one cycle per phase). This is the cost model
    an emulated study ranks fidelities by: the CPU's own throughput says nothing about it."""
    return PHASES["hifi4"] / PHASES[fidelity]


#: A knob value meaning "do not send the option" (tt-xla then uses its default).
UNSET = "unset"

FP32_DEST_ACC_WARNING = (
    'fp32_dest_acc_en = "false" is a graph-wide override: it also forces bf16 accumulation '
    "on index-arithmetic matmuls, which round flat indices >= 512 wrongly (tt-xla #5116; "
    "tt-xla's compiler_config.py says to leave it unset)"
)

#: Config extra (and knob) naming the trace region in bytes; 0 = allocated as needed.
TRACE_REGION_KNOB = "trace_region_size"
#: Bytes reserved for trace buffers: tt-xla's mnist_performant.py value.
DEFAULT_TRACE_REGION_SIZE = 10_000_000
#: tt-mlir #7426 (2026-03): a trace region of size 0 is allocated as needed.
AUTO_TRACE_REGION_SIZE = 0

MATH_FIDELITY = Knob(
    "math_fidelity",
    (*FIDELITIES, TTNN_DEFAULT),
    "matrix-engine fidelity of every op with a compute kernel config (compile option "
    "math_fidelity; unset = MLIR's HiFi4): fewer multiplier phases, up to 4x the matmul rate",
)
FP32_DEST_ACC_EN = Knob(
    "fp32_dest_acc_en",
    (UNSET, "true"),
    "fp32 destination accumulation, graph-wide (compile option fp32_dest_acc_en, sent only "
    "when set; unset = MLIR/ttnn per-op defaults)",
    opt_in=("false",),
    opt_in_warning=FP32_DEST_ACC_WARNING,
)
TRACE_REGION = Knob(
    TRACE_REGION_KNOB,
    (DEFAULT_TRACE_REGION_SIZE, AUTO_TRACE_REGION_SIZE),
    "bytes reserved for the trace (TT_RUNTIME_TRACE_REGION_SIZE, trace on only): the seed's "
    "fixed 10000000, or 0 = allocated as needed (tt-mlir #7426)",
    only_with="trace",
)
PERMUTE_MATMUL_FUSION = Knob(
    "experimental_enable_permute_matmul_fusion",
    ("true", "false"),
    'fuse transpose + matmul/linear (compile option, default true, sent only as "false"): '
    "unfused, the transpose can be const-evaluated, 'potentially improving performance' "
    "(compile_options.h; may run out of memory until tt-mlir PR #6198)",
)
DRAM_SPACE_SAVING = Knob(
    "experimental-enable-dram-space-saving-optimization",
    ("false", "true"),
    "the TTNNMemoryManagement pass, lower peak DRAM use (compile option, hyphenated as "
    'tt-xla parses it, default false, sent only as "true"): may let larger batches fit',
)

#: The compile-option knobs of the tt backend, in the order they are shown.
COMPILE_KNOBS = (MATH_FIDELITY, FP32_DEST_ACC_EN, PERMUTE_MATMUL_FUSION, DRAM_SPACE_SAVING)
#: tt-xla's default for each boolean option: a knob at its default is not sent.
_DEFAULTS = {
    PERMUTE_MATMUL_FUSION.name: "true",
    DRAM_SPACE_SAVING.name: "false",
}


def compile_options(knobs: dict[str, Any]) -> dict[str, str]:
    """The compile options `knobs` (a config's knob map) add to the map sent to tt-xla."""
    options: dict[str, str] = {}
    weight_dtype = knobs.get("experimental_weight_dtype", "none")
    if weight_dtype != "none":
        options["experimental_weight_dtype"] = str(weight_dtype)
    fidelity = knobs.get(MATH_FIDELITY.name)
    if fidelity is not None:
        options[MATH_FIDELITY.name] = str(fidelity)
    acc = knobs.get(FP32_DEST_ACC_EN.name, UNSET)
    if acc != UNSET:
        options[FP32_DEST_ACC_EN.name] = str(acc)
    for name, default in _DEFAULTS.items():
        value = knobs.get(name, default)
        if value != default:
            options[name] = str(value)
    return options
