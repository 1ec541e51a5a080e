"""Shared state of the tt-xla stand-in: the call log, the compile options, injected failures.

THIS IS A STAND-IN, NOT tt-xla. There is no Tenstorrent card on the machines this project is
developed and tested on, and Tenstorrent's software stack (pjrt-plugin-tt with its own
torch-xla build) cannot run without one. The packages in ``tests/tt_standin`` (``torch_xla``
and ``tt_torch``) imitate the few public tt-xla functions autotune's ``tt`` backend calls, run
the model on the CPU, and record every call with its arguments, in order, so tests can check
which calls the backend makes. Nothing measured through it says anything about a card.

Environment:
- ``TT_STANDIN_LOG``: JSON-lines file that receives one record per call (none when unset).
- ``TT_STANDIN_FAIL``: ``oom`` | ``oom_cb`` | ``trace_region`` | ``compile`` | ``crash``: print
  the real tt-metal / tt-xla message of that failure to stderr, as the runtime does, and
  raise the generic ``RuntimeError("Error code: 13")`` at the step where the runtime would:
  compile errors and out-of-memory at the first execution, the trace-region error at the
  second execution (the trace capture) and only when ``enable_trace`` is on.
- ``TT_STANDIN_FAIL_UNLESS_TRACE_REGION_AT_LEAST=N``: with ``TT_STANDIN_FAIL=trace_region``,
  fail only when ``TT_RUNTIME_TRACE_REGION_SIZE`` (as it was when torch_xla was imported) is
  below N bytes; N is then also the size the message says the trace needs.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch

LOG_ENV = "TT_STANDIN_LOG"
FAIL_ENV = "TT_STANDIN_FAIL"
FAIL_UNLESS_ENV = "TT_STANDIN_FAIL_UNLESS_TRACE_REGION_AT_LEAST"
TRACE_REGION_ENV = "TT_RUNTIME_TRACE_REGION_SIZE"

#: Read once, when torch_xla is imported: the runtime reads it when it loads, not later.
TRACE_REGION_AT_IMPORT: str | None = os.environ.get(TRACE_REGION_ENV)


class _State:
    def __init__(self) -> None:
        self.device_type: str | None = None
        self.compile_options: dict[str, Any] = {}
        self.parsed_options: dict[str, Any] = {}
        self.executions = 0


state = _State()

#: The stand-in's "device": the CPU. One object, so that moving a module to it is recognised.
DEVICE = torch.device("cpu")


def record(call: str, **fields: Any) -> None:
    """Append one call record to the log named by TT_STANDIN_LOG."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"call": call, **fields}, default=str, sort_keys=True)
    with open(path, "a") as f:
        f.write(line + "\n")


# --- torch calls that matter to the recipe ------------------------------------------------
# ``model.compile(backend=...)``, ``model.to(<device>)`` and the tensor moves and casts are
# torch's own methods, not tt-xla's; the stand-in wraps them (once, at import) only to record
# when they are called. Tensor ``.to`` calls are recorded when autotune's code makes them (the
# backend and the trial process; not the numerics emulation) or a script run as a program (the
# exported one), so the log shows what the timed loop
# does to the input and output: ``tensor.to`` with ``to`` = "device", "cpu" or the dtype.


def _tensor_to_target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for a in (*args, *kwargs.values()):
        if a is DEVICE:
            return "device"
        if isinstance(a, torch.dtype):
            return str(a)
        if isinstance(a, str | torch.device):
            return str(a)
    return "other"


def install_recorders() -> None:
    module = torch.nn.Module
    if getattr(module.compile, "_tt_standin", False):
        return
    compile_, to = module.compile, module.to
    tensor_to = torch.Tensor.to

    def recorded_tensor_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        ours = caller.startswith("autotune.") and caller != "autotune.numerics"
        if ours or caller == "__main__":  # __main__: an exported script run as a program
            record("tensor.to", to=_tensor_to_target(args, kwargs), dtype=str(self.dtype))
        return tensor_to(self, *args, **kwargs)

    torch.Tensor.to = recorded_tensor_to  # type: ignore[method-assign]

    def recorded_compile(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        record("model.compile", args=list(args), kwargs=kwargs)
        return compile_(self, *args, **kwargs)

    def recorded_to(self: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        if any(a is DEVICE for a in (*args, *kwargs.values())):
            record("model.to(device)")
        return to(self, *args, **kwargs)

    recorded_compile._tt_standin = True  # type: ignore[attr-defined]
    module.compile, module.to = recorded_compile, recorded_to


# --- compile options, parsed as tt-xla's PJRT plugin parses them --------------------------
# pjrt_implementation/src/api/compile_options.cc receives a map<string, string> (torch_xla
# stringifies the values): optimization_level goes through std::stoi and must be 0..2;
# booleans are lower-cased and must be true/1/yes/on or false/0/no/off; math_fidelity must be
# one of compile_options_parser.cc's parseMathFidelity values (else the compile fails with
# kInvalidArgument); unknown keys are ignored. Anything else aborts the process there; here it
# raises ValueError. Keys as tt-xla 95c1c1ce spells them (note the hyphens of one).
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_BOOL_KEYS = (
    "enable_trace",
    "enable_bfp8_conversion",
    "enable_const_eval",
    "dump_inputs",
    "fp32_dest_acc_en",
    "experimental_enable_permute_matmul_fusion",
    "experimental-enable-dram-space-saving-optimization",
)
_MATH_FIDELITIES = ("lofi", "hifi2", "hifi3", "hifi4", "ttnn_default")


def parse_compile_options(options: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
            raise TypeError(f"compile option {key!r}: keys are str, values str/int/float/bool")
        text = str(value)
        if key == "optimization_level":
            level = int(text)  # std::stoi: "2" and 2 both parse
            if not 0 <= level <= 2:
                raise ValueError(f"Invalid optimization_level: {level}. Must be between 0 and 2.")
            parsed[key] = level
        elif key in _BOOL_KEYS:
            low = text.lower()
            if low not in _TRUE + _FALSE:
                raise ValueError(f"Unknown boolean option value: {low} for {key}")
            parsed[key] = low in _TRUE
        elif key == "math_fidelity":
            if text not in _MATH_FIDELITIES:  # case-sensitive, as parseMathFidelity compares
                raise ValueError(f"Invalid math_fidelity value: {text}.")
            parsed[key] = text
        else:
            parsed[key] = text
    return parsed


# --- failures, with the messages the real runtime prints ----------------------------------
# Sources: tt-metal bank_manager.cpp (allocator OOM), program.cpp (circular buffers),
# mesh_trace.cpp (trace region), tt-xla module_builder.cc (MLIR pipeline).
_MESSAGES = {
    "oom": (
        "TT_FATAL @ tt_metal/impl/allocator/bank_manager.cpp:462: false\n"
        "info:\n"
        "Out of Memory: Not enough space to allocate 55444480 B L1 buffer across 70 banks, "
        "where each bank needs to store 792064 B, but bank size is 1393472 B "
        "(allocated: 923776 B, free: 469696 B, largest free block: 373824 B)"
    ),
    "oom_cb": (
        "TT_THROW @ tt_metal/impl/program/program.cpp:971: tt::exception\n"
        "info:\n"
        "Statically allocated circular buffers on core range [(x=0,y=0) - (x=7,y=7)] grow to "
        "3445728 B which is beyond max L1 size of 1499136 B"
    ),
    "compile": (
        "loc(\"convolution.12\"): error: failed to legalize operation 'ttir.conv2d'\n"
        "2025-01-01 00:00:00.000 | module_builder.cc:1034 ERR| "
        "Failed to run TTIRToTTNNCommon pipeline"
    ),
    "crash": (
        "TT_THROW @ tt_metal/impl/dispatch/system_memory_manager.cpp:627: tt::exception\n"
        "info:\n"
        "Device 0: read an unexpected value from the completion queue"
    ),
}
_TRACE_MESSAGE = (
    "TT_FATAL @ tt_metal/distributed/mesh_trace.cpp:116: "
    "mesh_cq.device()->get_trace_buffers_size() <= trace_region_size\n"
    "info:\n"
    "Creating trace buffers of size {need}B on MeshDevice 1, "
    "but only {have}B is allocated for trace region."
)


def before_execution() -> None:
    """Called by the compiled program at each execution; raises where the card would."""
    state.executions += 1
    n = state.executions
    kind = os.environ.get(FAIL_ENV, "")
    if not kind:
        return
    if kind in _MESSAGES and n == 1:
        _fail(kind, _MESSAGES[kind])
    if kind == "trace_region" and n == 2 and state.parsed_options.get("enable_trace"):
        have = int(TRACE_REGION_AT_IMPORT or 0)
        threshold = os.environ.get(FAIL_UNLESS_ENV)
        if threshold is not None and have >= int(threshold):
            return
        need = int(threshold) if threshold is not None else max(2 * have, 12_582_912)
        _fail(kind, _TRACE_MESSAGE.format(need=need, have=have))
    if kind not in (*_MESSAGES, "trace_region"):
        raise ValueError(f"{FAIL_ENV}={kind!r} is not one of {[*_MESSAGES, 'trace_region']}")


def _fail(kind: str, message: str) -> None:
    record("standin.fail", kind=kind, execution=state.executions)
    print(message, file=sys.stderr, flush=True)
    raise RuntimeError("Error code: 13")
