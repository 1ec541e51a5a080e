"""Device families behind one ABC (`Backend`); looked up by name, imported lazily."""

from __future__ import annotations

import importlib

from autotune.backends.base import Backend, Knob
from autotune.errors import UsageError

__all__ = ["Backend", "Knob", "UnknownBackendError", "backend_names", "get_backend"]

_BACKENDS = {
    "cpu": "autotune.backends.cpu:CPUBackend",
    # --emulate tt: Tenstorrent weight numerics, exactly, on the CPU (accuracy pre-screen).
    "cpu-emulate-tt": "autotune.backends.cpu:CPUEmulatedTTBackend",
    "tt": "autotune.backends.tt:TTBackend",
    "cuda": "autotune.backends.cuda:CUDABackend",
}


class UnknownBackendError(UsageError):
    pass


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> Backend:
    try:
        module, cls = _BACKENDS[name].split(":")
    except KeyError:
        raise UnknownBackendError(
            f"unknown backend {name!r}; known backends: {', '.join(backend_names())}"
        ) from None
    return getattr(importlib.import_module(module), cls)()
