"""Who runs a trial, and on which machine (tuner side; no torch).

Liveness of another tuner can only be judged from here when it runs under the same kernel
and in the same PID namespace: containers often share a hostname (or all say "localhost")
while their PIDs mean nothing to each other. A process is therefore identified by the
kernel's boot id, its PID namespace, its pid and the pid's start time (so a reused pid is
not mistaken for the tuner that died).
"""

from __future__ import annotations

import functools
import os
import platform
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any


@functools.cache
def kernel_id() -> str | None:
    """This kernel's boot id plus our PID namespace: pids are comparable within it only."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{pidns}"


def pid_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19])


def process_identity() -> dict[str, Any]:
    """What a trial's owner record holds (see `owner_alive`)."""
    return {
        "host": socket.gethostname(),
        "kernel": kernel_id(),
        "pid": os.getpid(),
        "start": pid_start(os.getpid()),
    }


def owner_alive(owner: dict[str, Any]) -> bool | None:
    """Whether the tuner recorded in `owner` still runs: None when this process cannot tell
    (another machine or container, or a record without a kernel id); the heartbeat decides
    then."""
    kernel = kernel_id()
    if kernel is None or owner.get("kernel") != kernel:
        return None
    pid = owner.get("pid", -1)
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    if " Z " in f"{state} ":  # a zombie nobody reaped yet is dead
        return False
    return pid_start(pid) == owner.get("start")  # else the pid was reused


@functools.cache
def machine() -> dict[str, str]:
    """The machine this tuner runs on, as recorded on each trial: CPU model and host."""
    try:
        ident = Path("/etc/machine-id").read_text().strip()
    except OSError:
        ident = ""
    return {
        "cpu": cpu_model(),
        "host": socket.gethostname(),
        "id": ident or (kernel_id() or "").split("/")[0] or socket.gethostname(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machines_warning(machines: Iterable[Any]) -> str | None:
    """One line when these `machine()` records (as trials store them) name more than one
    machine: CPU throughputs measured on them are then not comparable."""
    seen: dict[tuple, dict[str, Any]] = {}
    for m in machines:
        if isinstance(m, dict):
            seen.setdefault((m.get("cpu"), m.get("host"), m.get("id")), m)
    if len(seen) < 2:
        return None
    names = "; ".join(f"{m.get('cpu')} on {m.get('host')}" for m in seen.values())
    return (
        f"warning: this study's CPU trials run on {len(seen)} machines ({names}); "
        "their throughputs are not comparable"
    )


def slot_threads(jobs: int, on_host_cpu: bool) -> int | None:
    """Threads per trial when `jobs` trials at once would share this host's CPU cores: each
    gets its share (also for re-measurements, so the figures stay comparable). None where
    nothing is shared (one slot, or trials that compute on a device)."""
    return max(1, usable_cores() // jobs) if on_host_cpu and jobs > 1 else None


def cores_note(jobs: int, threads: int | None) -> str | None:
    """One line when `jobs` trials at once share this host's cores, `threads` each."""
    if threads is None:
        return None
    return (
        f"note: {jobs} trials at once share this host's {usable_cores()} cores "
        f"({threads} thread(s) each); CPU throughput measured under --jobs > 1 "
        "is not comparable with a lone run"
    )
