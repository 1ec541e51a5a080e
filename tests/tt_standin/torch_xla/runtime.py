"""STAND-IN for ``torch_xla.runtime`` (no Tenstorrent card here).

Imitates the calls autotune's ``tt`` backend makes and records them. See
``torch_xla/__init__.py``.
"""

from __future__ import annotations

from typing import Any

from torch_xla import _standin

#: What the stand-in reports as the device architecture: never a real chip name.
STANDIN_ARCH = "stand-in (CPU, no Tenstorrent card)"


def set_device_type(pjrt_device: str) -> None:
    _standin.record("xr.set_device_type", device_type=pjrt_device)
    _standin.state.device_type = pjrt_device


def device_type() -> str | None:
    return _standin.state.device_type


def clear_computation_cache() -> None:
    _standin.record("xr.clear_computation_cache")


def global_runtime_device_count() -> int:
    return 1


def global_runtime_device_attributes() -> list[dict[str, Any]]:
    _standin.record("xr.global_runtime_device_attributes")
    return [{"name": f"{_standin.state.device_type or 'CPU'}:0", "device_arch": STANDIN_ARCH}]
