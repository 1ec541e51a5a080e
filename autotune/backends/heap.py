"""glibc's allocator, kept from handing the heap back to the OS after every batch.

glibc serves blocks over ``M_MMAP_THRESHOLD`` with their own mmap (unmapped at free) and trims
the heap's top once more than ``M_TRIM_THRESHOLD`` of it is free. Both start at 128 KiB and
rise only as large blocks are freed (glibc's dynamic threshold), so a fresh process that runs
a model whose activations are a few MB maps, faults in and returns them on every batch,
while a process forked from one that has already freed large blocks (the trial fork server)
does not: the same config measured faster in a trial than in the user's process.
`keep_heap` fixes both thresholds, in every process that runs a CPU config: trial processes,
forked or spawned, and the user's through `autotune.apply_config`. It is process-wide, as the
thread count is; the cost is that the heap keeps its peak size. Figures: docs/benchmarks.md
("CPU streams and OpenVINO").
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (glibc malloc.h)
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 256 << 20
# The largest mmap threshold glibc takes on a 64-bit host (DEFAULT_MMAP_THRESHOLD_MAX): the
# ceiling its dynamic threshold would reach on its own.
MMAP_BYTES = 32 << 20


def keep_heap() -> bool:
    """Fix both thresholds where the C library is glibc; False where it is not (nothing set)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)) and bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
    )
