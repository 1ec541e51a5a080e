"""What a trial ran on: everything that changes the answer, recorded with every result."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.backends import Backend

_ENV_PREFIXES = ("TORCH", "OMP_", "MKL_", "TT_", "CUDA_", "XLA_", "PJRT_")


def environment(backend: Backend) -> dict[str, Any]:
    """Everything that changes the answer: versions, device, threads, relevant env."""
    import torch

    return {
        "device": backend.device_name(),
        "versions": {"python": platform.python_version(), **backend.versions()},
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
        # e.g. whether bf16 ran natively or in fp32 rounded to bf16 (emulated TT)
        **({"numerics": numerics} if (numerics := backend.numerics()) else {}),
    }
