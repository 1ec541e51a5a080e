"""`keep_heap`: glibc's real allocator, in fresh interpreters (its thresholds are
process-wide and rise on their own once large blocks are freed, so each case starts clean)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not glibc")

# Holds one 8 MiB block, then a hundred 1 MiB blocks, and frees them, reading glibc's own
# counters (mallinfo2): the bytes in mmapped blocks while the 8 MiB one is held, and how much
# of the 100 MiB the heap still holds once they are freed (trimmed or kept).
PROBE = """
import ctypes, json, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
mode = sys.argv[1]
kept = None
if mode == "keep":
    from autotune.backends.heap import keep_heap
    kept = keep_heap()
elif mode in ("torch", "prepare"):
    from autotune.backends import get_backend
    from autotune.wire import TrialConfig
    from studies import get_study
    model = get_study("mnist").build_model()
    if mode == "prepare":
        get_backend(sys.argv[2]).prepare(model, TrialConfig("mnist", sys.argv[2], 8))
block = libc.malloc(8 << 20)
mmapped = libc.mallinfo2().hblkhd
libc.free(block)
before = libc.mallinfo2().arena
blocks = [libc.malloc(1 << 20) for _ in range(100)]
for b in reversed(blocks):
    libc.free(b)
kept_mib = (libc.mallinfo2().arena - before) / (1 << 20)
print(json.dumps({"kept": kept, "mmapped": mmapped, "kept_mib": kept_mib}))
"""


def probe(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_fresh_process_maps_large_blocks_and_trims_the_heap_without_it():
    plain = probe("plain")
    assert plain["mmapped"] >= 8 << 20  # its own mmap, unmapped again at free
    assert plain["kept_mib"] < 50  # the 100 MiB went back to the OS


def test_keep_heap_serves_them_from_the_heap_and_keeps_it():
    kept = probe("keep")
    assert kept["kept"] is True
    assert kept["mmapped"] < 8 << 20
    assert kept["kept_mib"] >= 90  # not trimmed: the next batch reuses it


@pytest.mark.parametrize("backend", ["cpu", "cpu-emulate-tt"])
def test_cpu_prepare_keeps_the_heap(backend):
    """Both CPU backends set it where a config is prepared (the trial, apply_config); with
    torch imported and a model built but not prepared, the heap is still trimmed."""
    assert probe("torch")["kept_mib"] < 50
    assert probe("prepare", backend)["kept_mib"] >= 90
