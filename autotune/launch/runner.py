"""Spawn one trial process per trial, enforce its timeout, and always return a result."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from autotune.backends import get_backend
from autotune.launch import forkserver
from autotune.launch.probes import checkout_env
from autotune.wire import Status, TrialJob, TrialResult

STDERR_TAIL_CHARS = 4000
#: The trial process's entry module (``main(argv, preloaded_bytes)``), named as data: the
#: launcher never imports the child's code.
TRIAL_ENTRY = "autotune.child.main"
#: What a fork server imports once besides the entry: the compile path and the CPU backends'
#: helpers ("?": optional, e.g. a backend's helper that needs a newer torch).
TRIAL_PRELOAD = (
    "torch",
    "torch._dynamo",
    "torch._inductor.compile_fx",
    "autotune.measure",
    "autotune.numerics",
    "autotune.backends.cpu",
    "?autotune.backends._torch_dtypes",
    "?autotune.backends._bf16",
)


@dataclass(frozen=True)
class RunnerSettings:
    python: str = sys.executable
    timeout_s: float | None = None
    cache_dir: Path | None = None  # persistent compile caches shared across trials
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the device this slot owns
    # CPU threads per trial process when trials share this host's cores (--jobs > 1); None: all.
    threads: int | None = None
    # Fork trials from a server that has imported torch, for backends that allow it
    # (Backend.fork_trials); False: always spawn a fresh interpreter.
    fork_trials: bool = True


def run_job(
    job: TrialJob, settings: RunnerSettings, cancel: threading.Event | None = None
) -> TrialResult:
    """Run `job` in a fresh process group and return its result, failures included.

    Setting `cancel` (or Ctrl-C in the calling thread) kills the whole group; the former
    returns an INTERRUPTED result, the latter re-raises.
    """
    backend = get_backend(job.config.backend)
    with tempfile.TemporaryDirectory(prefix="autotune-trial-") as tmp:
        tmpdir = Path(tmp)
        job_path, result_path = tmpdir / "job.json", tmpdir / "result.json"
        job_path.write_text(json.dumps(job.to_dict()))
        env = _trial_env(settings, {**backend.trial_env(job.config), **settings.extra_env})
        started = time.perf_counter()
        with open(tmpdir / "stdout", "wb") as out, open(tmpdir / "stderr", "wb") as err:
            argv = [str(job_path), str(result_path)]
            fork = settings.fork_trials and backend.fork_trials
            proc = (
                fork
                and forkserver.launch(
                    settings.python,
                    env,
                    TRIAL_ENTRY,
                    TRIAL_PRELOAD,
                    argv,
                    tmpdir / "stdout",
                    tmpdir / "stderr",
                    cancel,
                )
            ) or subprocess.Popen(
                [settings.python, "-m", TRIAL_ENTRY, *argv],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: kill it and its children
            )
            try:
                outcome = _wait(proc, settings.timeout_s, cancel)
            except BaseException:
                _kill_group(proc)
                raise
            if outcome != "exited":
                _kill_group(proc)
        if getattr(proc, "lost", False) and outcome == "exited":  # its fork server died
            return run_job(job, replace(settings, fork_trials=False), cancel)
        wall = time.perf_counter() - started
        stderr = (tmpdir / "stderr").read_bytes().decode("utf-8", "replace")
        if outcome == "cancelled":
            result = TrialResult(
                Status.INTERRUPTED,
                "study interrupted; trial process killed",
                stderr_tail=stderr[-STDERR_TAIL_CHARS:],
            )
        else:
            timed_out = outcome == "timeout"
            result = _collect(proc.returncode, timed_out, settings, result_path, stderr, backend)
    result.timings["process_s"] = wall
    # To the millisecond: the stored record stays short enough to read in optuna-dashboard.
    result.timings = {k: round(v, 3) for k, v in result.timings.items()}
    return result


def _collect(
    returncode: int,
    timed_out: bool,
    settings: RunnerSettings,
    result_path: Path,
    stderr: str,
    backend: object,
) -> TrialResult:
    tail = stderr[-STDERR_TAIL_CHARS:]
    if timed_out:
        return TrialResult(
            Status.TIMEOUT,
            f"no result after {settings.timeout_s:g} s; process group killed",
            stderr_tail=tail,
        )
    if result_path.exists():
        try:
            result = TrialResult.read(result_path)
        except (ValueError, KeyError, TypeError) as exc:
            return TrialResult(Status.CRASH, f"unreadable result file: {exc}", stderr_tail=tail)
        if not result.ok:
            result.stderr_tail = tail
            # Device runtimes print the real reason to stderr; Python only sees generic text.
            if result.status is Status.CRASH:
                result.status = backend.classify(stderr) or Status.CRASH
        return result
    if returncode < 0:
        name = signal.Signals(-returncode).name
        message = f"trial process killed by {name}"
    else:
        message = f"trial process exited with code {returncode} and wrote no result"
    status = backend.classify(stderr) or Status.CRASH
    return TrialResult(status, message, stderr_tail=tail)


def _wait(proc: subprocess.Popen, timeout: float | None, cancel: threading.Event | None) -> str:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = 0.2 if deadline is None else min(0.2, max(deadline - time.monotonic(), 0))
        try:
            proc.wait(timeout=step)
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _trial_env(settings: RunnerSettings, backend_env: dict[str, str]) -> dict[str, str]:
    env = checkout_env()
    if settings.cache_dir is not None:
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings.cache_dir / "inductor"))
    if settings.threads is not None:
        # torch sizes its intra-op pool from these when it starts (inductor's C++ kernels
        # then specialise on that count); read before any torch import in the trial process.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(settings.threads)
    env.update(backend_env)
    return env
