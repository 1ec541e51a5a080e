"""STAND-IN for ``torch_xla.core.xla_model`` (no Tenstorrent card here).

Imitates the calls autotune's ``tt`` backend makes and records them; the device is the CPU.
See ``torch_xla/__init__.py``.
"""

from __future__ import annotations

import torch

from torch_xla import _standin


def xla_device(n: int | None = None, devkind: str | None = None) -> torch.device:
    _standin.record("xm.xla_device", n=n, device_type=_standin.state.device_type)
    return _standin.DEVICE


def wait_device_ops(devices: list[str] | None = None) -> None:
    _standin.record("xm.wait_device_ops")


def xla_device_hw(device: torch.device | str) -> str:
    """The hardware type of `device`: "TT" once set_device_type("TT") ran (like the plugin)."""
    _standin.record("xm.xla_device_hw", device=str(device))
    return _standin.state.device_type or "CPU"
