"""Is anything else running while a trial times? (trial process, Linux `/proc/stat`).

Other processes' CPU time during a measurement distorts it by up to 4x on a 2-core VM. The
kernel's per-CPU busy time (user, nice, system, irq, softirq and steal: time the hypervisor
gave to another guest) minus this process's own CPU time is what the rest of the machine
used; divided by the wall time it is in cores. Elsewhere (no /proc) nothing is known.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

# Above this many cores used by others during timing, a measurement is distorted: the
# tuner side's own share (heartbeats, polling) stays far below it.
BUSY_CORES = 0.25
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_seconds() -> float | None:
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal [guest guest_nice, inside user]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


@dataclass(frozen=True)
class LoadProbe:
    """A point to measure others' CPU use from (`start`, then `others_cores`)."""

    wall: float
    busy: float | None
    own: float

    @classmethod
    def start(cls) -> LoadProbe:
        return cls(time.perf_counter(), _busy_seconds(), _own_seconds())

    def others_cores(self) -> float | None:
        """Cores' worth of CPU time that other processes used since `start` (None: unknown)."""
        busy = _busy_seconds()
        wall = time.perf_counter() - self.wall
        if busy is None or self.busy is None or wall <= 0:
            return None
        return max(0.0, (busy - self.busy) - (_own_seconds() - self.own)) / wall


def _own_seconds() -> float:
    t = os.times()  # this process's threads; children (none while timing) not counted
    return t.user + t.system
