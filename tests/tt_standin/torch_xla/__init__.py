"""STAND-IN for Tenstorrent's torch-xla build. Not torch-xla; no Tenstorrent card here.

We have neither a Tenstorrent card nor its software stack, so this package imitates the
public torch_xla functions autotune's ``tt`` backend calls, runs everything on the CPU (the
"device" is the CPU), and records each call with its arguments, in order, into the file named
by ``TT_STANDIN_LOG``. Tests use it to check which calls the backend makes and in which order;
see ``torch_xla/_standin.py`` for the log and the failure injection.

Besides tt-xla's functions, it records torch's ``model.compile(...)`` and
``model.to(device)`` (wrapped for that purpose only). Recorded at import: the value of
``TT_RUNTIME_TRACE_REGION_SIZE`` at that moment (the real runtime reads it when it loads, so
it must be set before ``import torch_xla``).
"""

from __future__ import annotations

from typing import Any

import torch

from torch_xla import _standin

__version__ = "0.0+standin"

_standin.record("import torch_xla", trace_region_size=_standin.TRACE_REGION_AT_IMPORT)
_standin.install_recorders()


def set_custom_compile_options(options: dict[str, Any]) -> None:
    """Tenstorrent's torch-xla: process-global options handed to the PJRT plugin's compiler."""
    parsed = _standin.parse_compile_options(options)
    _standin.record("torch_xla.set_custom_compile_options", options=dict(options), parsed=parsed)
    _standin.state.compile_options = dict(options)
    _standin.state.parsed_options = parsed


def device(index: int | None = None) -> torch.device:
    """``torch_xla.device()``: the stand-in's device is the CPU."""
    _standin.record("torch_xla.device", index=index, device_type=_standin.state.device_type)
    return _standin.DEVICE
