"""Fork each trial process from a process that has already imported torch.

A trial still runs in a process of its own (crash, OOM and hang isolation as with a spawn),
but instead of a fresh interpreter importing torch, inductor and the study (seconds per
trial), the runner asks a server, ``python -m autotune.launch.forkserver ENTRY PRELOAD...``,
to fork one. The entry module (``ENTRY``, whose ``main(argv, preloaded_bytes)`` a child runs)
and the modules to import first are data the runner passes: this module imports none of the
trial code itself. The server imports all that once and never runs a torch op, so no
OpenMP/intra-op thread pool exists at the fork: it stays single-threaded (checked before
every fork), and each child starts its own pool with its own thread count.

Protocol: JSON lines. The runner writes ``{"id", "argv", "stdout", "stderr", "env"}`` on the
server's stdin; the server answers ``{"id", "pid"}`` (or ``{"id", "error"}``) at once and
``{"id", "returncode"}`` when that child ends (a negative signal number when killed, as
``Popen.returncode``). The child calls ``setsid()``, so the runner's ``killpg`` on timeout,
cancel or Ctrl-C ends it and everything it started, as with a spawned trial process.

Runner side (`launch`): one server per (interpreter, environment), shared by all threads and
reused across trials; the per-slot thread share (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``) is
applied in the child instead, so --jobs slots share one server. A server that cannot start,
or dies, makes `launch` return None (or the handle ``lost``): the runner then spawns as
before, and the next trial starts a new server. A server exits at EOF on its stdin, i.e.
when the process that started it exits, however it exits, and kills its children then.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Set per trial in the child (torch reads them only when its pool starts, which the
#: server never does); everything else in the environment selects the server.
PER_JOB_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
START_TIMEOUT_S = 300.0  # importing torch + inductor on a loaded 2-core machine
REPLY_TIMEOUT_S = 60.0  # a fork answers in milliseconds; longer means the server is stuck
MAX_SERVERS = 4  # distinct (python, env) pairs kept at once; the idlest goes first
MAX_START_FAILURES = 3  # then that pair spawns for good (e.g. an interpreter without torch)


# --- server ------------------------------------------------------------------------------


def serve(entry: str, preload: Sequence[str]) -> int:
    """Serve forks of `entry` (a module with ``main(argv, preloaded_bytes) -> int``, and
    optionally ``preload()``, called once here) after importing `preload`; names starting
    with ``?`` are optional (skipped if missing)."""
    global _torch_data_bytes
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints (imports, warnings) must never mix into the replies
    import torch  # noqa: F401

    # A spawned trial process has this much data when its trial allocates; a child's data beyond
    # it is the server's preloads, not the trial's (see autotune.child.main's memory limit).
    _torch_data_bytes = data_bytes()
    for name in (entry, *preload):
        if name.startswith("?"):
            with contextlib.suppress(ImportError):  # e.g. optional helpers of one backend
                importlib.import_module(name[1:])
        else:
            importlib.import_module(name)  # a failure exits: the runner spawns instead
    hook = getattr(importlib.import_module(entry), "preload", None)
    if hook is not None:
        with contextlib.suppress(Exception):  # e.g. a broken study fails in its trial
            hook()
    warm_inductor()
    # numpy's OpenBLAS (loaded by torch) starts its pool at load and stops it at each fork
    # (pthread_atfork), restarting it on first use: one empty fork leaves us single-threaded.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    _send(reply_fd, {"ready": True, "pid": os.getpid(), "threads": thread_count()})

    children: dict[int, tuple[Any, int | None]] = {}  # pid -> (request id, pidfd)
    by_pidfd: dict[int, int] = {}
    poller = select.poll()  # no fd of its own (unlike epoll) to leak into children
    poller.register(0, select.POLLIN)
    use_pidfd = hasattr(os, "pidfd_open")
    buffer = b""
    while True:
        timeout = None if use_pidfd or not children else 100
        for fd, _ in poller.poll(timeout):
            if fd != 0:
                _reap(by_pidfd.pop(fd), children, poller, reply_fd)
                continue
            data = os.read(0, 1 << 16)
            if not data:  # the runner's process is gone: take the children with it
                for pid in children:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                return 0
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = _fork(entry, request, reply_fd, list(by_pidfd))
                if pid is None:
                    continue
                pidfd = None
                if use_pidfd:
                    try:
                        pidfd = os.pidfd_open(pid)
                    except OSError:
                        use_pidfd = False
                if pidfd is not None:
                    by_pidfd[pidfd] = pid
                    poller.register(pidfd, select.POLLIN)
                children[pid] = (request["id"], pidfd)
                _send(reply_fd, {"id": request["id"], "pid": pid})
        if not use_pidfd:
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    _reap(pid, children, poller, reply_fd, status)


def warm_inductor() -> None:
    """Fill what inductor computes once per process on its first compile, so that no forked
    trial pays for it again (measured: a compile that hits the FX graph cache took 8-10 s
    in a forked trial without this, 2.5-3.5 s with it, on a loaded 2-core Xeon):

    - the CPU vector-ISA probes: each candidate ISA's test program is compiled (cached on
      disk) and then loaded by a fresh interpreter, ~10 subprocesses;
    - the hash of torch's own sources (part of every cache key);
    - the pattern-matcher tables (pre-grad, joint-graph, post-grad), built under fake
      tensors: no torch op runs, so no thread pool starts.

    Each is what the trial would compute itself, with the same environment (the server's
    is the trials' less their thread counts). Best effort: a failure leaves it to the
    trials. tqdm's monitor thread, which the pattern tables would start, stays off."""
    with contextlib.suppress(ImportError):
        import tqdm

        tqdm.tqdm.monitor_interval = 0  # its monitor thread would make forks unsafe
    with contextlib.suppress(Exception):
        import torch
        from torch._inductor import codecache, cpu_vec_isa
        from torch._inductor.fx_passes import joint_graph, post_grad, pre_grad

        cpu_vec_isa.pick_vec_isa()
        codecache.torch_key()
        pre_grad.lazy_init()
        joint_graph.lazy_init(torch.device("cpu"))
        post_grad.lazy_init()


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def data_bytes() -> int:
    """This process's data segment (what RLIMIT_DATA limits): VmData in /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


_torch_data_bytes = 0


def _fork(entry: str, request: dict[str, Any], reply_fd: int, pidfds: list[int]) -> int | None:
    threads = thread_count()
    if threads != 1:  # a fork would copy a started thread pool's locks: spawn instead
        _send(reply_fd, {"id": request["id"], "error": f"server has {threads} threads"})
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        _send(reply_fd, {"id": request["id"], "error": f"fork failed: {exc}"})
        return None
    if pid == 0:
        _child(entry, request, [reply_fd, *pidfds])  # never returns
    return pid


def _child(entry: str, request: dict[str, Any], server_fds: list[int]) -> None:
    code = 1
    try:
        os.setsid()  # its own process group: the runner kills it and all it starts
        for fd in server_fds:
            os.close(fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for target, path, mode in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], flags),
            (2, request["stderr"], flags),
        ):
            fd = os.open(path, mode, 0o644)
            os.dup2(fd, target)
            os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for key, value in request["env"].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        threads = request["env"].get("OMP_NUM_THREADS")
        if threads:
            import torch

            torch.set_num_threads(int(threads))  # what OMP_NUM_THREADS does at startup
        module = importlib.import_module(entry)  # imported by the server already
        sys.argv = [module.__file__ or entry, *request["argv"]]
        code = module.main(request["argv"], max(0, data_bytes() - _torch_data_bytes))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # what the interpreter does at exit (compile pools...)
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap(
    pid: int,
    children: dict[int, tuple[Any, int | None]],
    poller: select.poll,
    reply_fd: int,
    status: int | None = None,
) -> None:
    request_id, pidfd = children.pop(pid)
    if status is None:
        status = os.waitpid(pid, 0)[1]
    if pidfd is not None:
        poller.unregister(pidfd)
        os.close(pidfd)
    _send(reply_fd, {"id": request_id, "returncode": os.waitstatus_to_exitcode(status)})


def _send(fd: int, message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


# --- runner side -------------------------------------------------------------------------


class ForkedProcess:
    """A forked trial process as the runner sees it: the part of `subprocess.Popen` it uses
    (`pid`, `returncode`, `wait`), so timeouts and kills work unchanged. `lost` is set
    when the server died before reporting the exit (the child's group is killed then)."""

    def __init__(self) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self.lost = False
        self.error: str | None = None
        self._started = threading.Event()
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired("trial process (forked)", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode

    def _lose(self) -> None:
        if self.pid and self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.lost = True
        self.returncode = -signal.SIGKILL if self.returncode is None else self.returncode
        self._started.set()
        self._done.set()


class _Server:
    def __init__(
        self, python: str, env: dict[str, str], entry: str, preload: Sequence[str]
    ) -> None:
        # The server's own stderr, shown if it fails; closed with this object.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [python, "-m", __name__, entry, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            start_new_session=True,  # the tuner's Ctrl-C is for the tuner, not for it
        )
        self.python, self.env = python, env
        self.info: dict[str, Any] = {}
        self.dead = False
        self.last_used = time.monotonic()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[int, ForkedProcess] = {}
        self._next_id = 0
        threading.Thread(target=self._read, name="autotune-forkserver", daemon=True).start()

    def wait_ready(self, cancel: threading.Event | None) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready.wait(0.2):
            if (cancel is not None and cancel.is_set()) or time.monotonic() > deadline:
                return False
        return not self.dead

    def submit(
        self, argv: Sequence[str], stdout: Path, stderr: Path, env: dict[str, str | None]
    ) -> ForkedProcess | None:
        handle = ForkedProcess()
        request = {"argv": list(argv), "stdout": str(stdout), "stderr": str(stderr), "env": env}
        with self._lock:
            if self.dead:
                return None
            request["id"] = self._next_id
            self._next_id += 1
            self._pending[request["id"]] = handle
            self.last_used = time.monotonic()
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
            except OSError:
                self._pending.pop(request["id"], None)
                return None
        if not handle._started.wait(REPLY_TIMEOUT_S):
            self.close()  # stuck: its children are killed when it reads EOF or dies
            return None
        return None if handle.lost or handle.error else handle

    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def close(self) -> None:
        with self._lock:
            self.dead = True
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: the server kills its children and exits

    def failure(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self.proc.poll()}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                break  # not our protocol: treat as a dead server
            if message.get("ready"):
                self.info = message
                self._ready.set()
                continue
            with self._lock:
                handle = self._pending.get(message["id"])
                if handle is None:
                    continue
                if "pid" in message:
                    handle.pid = message["pid"]
                    handle._started.set()
                    continue
                del self._pending[message["id"]]
            if "error" in message:
                handle.error = message["error"]
                handle._started.set()
            else:
                handle.returncode = message["returncode"]
                handle._done.set()
        with self._lock:
            self.dead = True
            pending, self._pending = list(self._pending.values()), {}
        for handle in pending:
            handle._lose()
        self._ready.set()
        with contextlib.suppress(OSError):
            self.proc.kill()  # e.g. it wrote garbage: it must not live on
        self.proc.wait()


_Key = tuple[str, tuple[tuple[str, str], ...], str, tuple[str, ...]]
_servers: dict[_Key, _Server] = {}
_failures: dict[_Key, int] = {}
_servers_lock = threading.Lock()


def launch(
    python: str,
    env: dict[str, str],
    entry: str,
    preload: Sequence[str],
    argv: Sequence[str],
    stdout: Path,
    stderr: Path,
    cancel: threading.Event | None = None,
) -> ForkedProcess | None:
    """Fork `python -m ENTRY ARGV` (environment `env`) from this (python, env, entry,
    preload)'s server, started on first use. None: no server could do it; spawn instead."""
    server_env = {k: v for k, v in env.items() if k not in PER_JOB_ENV}
    key = (python, tuple(sorted(server_env.items())), entry, tuple(preload))
    with _servers_lock:
        if _failures.get(key, 0) >= MAX_START_FAILURES:
            return None
        server = _servers.get(key)
        if server is None or server.dead:
            _evict()
            try:
                server = _servers[key] = _Server(python, server_env, entry, preload)
            except OSError:
                _failures[key] = _failures.get(key, 0) + 1
                return None
    if not server.wait_ready(cancel):
        if cancel is None or not cancel.is_set():
            with _servers_lock:
                _failures[key] = _failures.get(key, 0) + 1
            warnings.warn(
                f"autotune fork server ({python}) did not start: {server.failure()}; "
                "trials spawn a fresh interpreter",
                RuntimeWarning,
                stacklevel=2,
            )
            server.close()
        return None
    return server.submit(argv, stdout, stderr, {k: env.get(k) for k in PER_JOB_ENV})


def servers() -> list[_Server]:
    """The live servers (for tests and diagnostics)."""
    with _servers_lock:
        return [s for s in _servers.values() if not s.dead]


def shutdown() -> None:
    """Close every server (each kills its children and exits at EOF)."""
    with _servers_lock:
        running = list(_servers.values())
        _servers.clear()
    for server in running:
        server.close()
    for server in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=5)


def _evict() -> None:
    """Keep at most MAX_SERVERS: close dead entries, then the least recently used idle one."""
    for key in [k for k, s in _servers.items() if s.dead]:
        del _servers[key]
    idle = sorted((s.last_used, k) for k, s in _servers.items() if not s.busy())
    while len(_servers) >= MAX_SERVERS and idle:
        _servers.pop(idle.pop(0)[1]).close()


atexit.register(shutdown)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2:]))
