"""Trials forked from the fork server (autotune.launch.forkserver) behave as spawned ones: real
server processes, real forked trial processes, the real MNIST study (tests/fixtures/
forkserver_studies.py records which process each trial ran in)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from autotune.jobs import fp32_reference
from autotune.launch import forkserver
from autotune.launch.runner import RunnerSettings, run_job
from autotune.wire import Status, TrialConfig, TrialJob
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

FIXTURE = "tests.fixtures.forkserver_studies"


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory):
    """Where the fixture studies record their process (one env for the module: one server)."""
    path = tmp_path_factory.mktemp("probes")
    os.environ["FORKSERVER_PROBE_DIR"] = str(path)
    yield path
    del os.environ["FORKSERVER_PROBE_DIR"]


@pytest.fixture(scope="module")
def settings(cache_dir: Path, probe_dir: Path) -> RunnerSettings:
    # threads=1: the per-slot thread share of --jobs, applied in the child.
    return RunnerSettings(cache_dir=cache_dir, timeout_s=300, threads=1)


@pytest.fixture(scope="module")
def reference(settings: RunnerSettings, cache_dir: Path) -> Path:
    return fp32_reference("mnist", 1000, settings, cache_dir).path


def _job(study: str, reference: Path | None = None) -> TrialJob:
    cfg = TrialConfig(f"{FIXTURE}:{study}", "cpu", 64)
    ref = str(reference) if reference else None
    return TrialJob(cfg, measure_seconds=0.2, eval_limit=1000, reference_path=ref)


def _probes(probe_dir: Path) -> dict[int, dict]:
    return {int(p.stem): json.loads(p.read_text()) for p in probe_dir.glob("*.json")}


def _new_probe(probe_dir: Path, before: dict[int, dict]) -> dict:
    (new,) = [v for k, v in _probes(probe_dir).items() if k not in before]
    return new


def _server_of(probe: dict) -> forkserver._Server:
    """The live server that forked the trial `probe` recorded. (Each test has a server of
    its own: pytest sets PYTEST_CURRENT_TEST, and the environment selects the server.)"""
    (server,) = [s for s in forkserver.servers() if s.proc.pid == probe["ppid"]]
    return server


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def _gone(*pids: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(scope="module")
def forked_and_spawned(settings, reference, probe_dir):
    before = _probes(probe_dir)
    forked = run_job(_job("PROBE", reference), settings)
    forked_probe = _new_probe(probe_dir, before)
    before = _probes(probe_dir)
    spawned = run_job(_job("PROBE", reference), replace(settings, fork_trials=False))
    return forked, forked_probe, spawned, _new_probe(probe_dir, before)


def test_forked_result_equals_spawned(forked_and_spawned):
    forked, forked_probe, spawned, spawned_probe = forked_and_spawned
    assert forked.status is spawned.status is Status.OK, (forked.message, spawned.message)
    assert sorted(forked.metrics) == sorted(spawned.metrics)
    assert sorted(forked.timings) == sorted(spawned.timings)
    # Same outputs: same model, same kernels, same thread count.
    assert forked.metrics["accuracy"] == spawned.metrics["accuracy"]
    assert forked.environment["threads"] == spawned.environment["threads"] == 1
    assert forked.environment["env"] == spawned.environment["env"]
    assert forked_probe["omp"] == spawned_probe["omp"] == "1"


def test_trial_is_a_fork_of_the_server_in_its_own_session(forked_and_spawned):
    _, forked_probe, _, spawned_probe = forked_and_spawned
    assert _server_of(forked_probe).python == RunnerSettings.python
    assert forked_probe["pgid"] == forked_probe["sid"] == forked_probe["pid"]
    assert spawned_probe["ppid"] == os.getpid()  # fork_trials=False: spawned, as before


def test_server_is_single_threaded_between_forks(forked_and_spawned):
    server = _server_of(forked_and_spawned[1])
    assert server.info["threads"] == 1  # at startup, after importing torch and inductor
    assert _threads(server.proc.pid) == 1  # and after serving trials


def test_warm_up_fills_inductors_per_process_caches_without_a_thread():
    """What every forked trial would otherwise compute on its first compile (the ISA
    probes alone spawn ~10 processes), done once in the server: filled, and no thread."""
    code = (
        "import threading\n"
        "from autotune.launch import forkserver\n"
        "from torch._inductor import cpu_vec_isa\n"
        "from torch._inductor.fx_passes import joint_graph, post_grad\n"
        "assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize == 0\n"
        "forkserver.warm_inductor()\n"
        "print(cpu_vec_isa.valid_vec_isa_list.cache_info().currsize,"
        " joint_graph.lazy_init.cache_info().currsize,"
        " post_grad.lazy_init.cache_info().currsize, threading.active_count())\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1", "1", "1"]


def test_compiled_trial_forked_after_warm_up_equals_spawned(settings, reference):
    job = replace(_job("PROBE", reference), config=TrialConfig(f"{FIXTURE}:PROBE", "cpu", 64, 2))
    forked = run_job(job, settings)
    spawned = run_job(job, replace(settings, fork_trials=False))
    assert forked.status is spawned.status is Status.OK, (forked.message, spawned.message)
    for key in ("accuracy", "agreement", "pcc"):
        assert forked.metrics[key] == spawned.metrics[key]


def test_hanging_child_and_its_group_are_killed_on_timeout(settings, probe_dir):
    before = _probes(probe_dir)
    start = time.monotonic()
    result = run_job(_job("HANG"), replace(settings, timeout_s=15))
    assert result.status is Status.TIMEOUT
    assert "process group killed" in result.message
    assert time.monotonic() - start < 60
    probe = _new_probe(probe_dir, before)
    server = _server_of(probe)
    assert _gone(probe["pid"], probe["grandchild"], within=5)
    assert _threads(server.proc.pid) == 1 and not server.dead  # it goes on, still clean


def test_cancel_kills_forked_child(settings, probe_dir):
    before = _probes(probe_dir)
    cancel = threading.Event()
    thread = threading.Thread(
        target=lambda: _wait_for_probe(probe_dir, before) and cancel.set(), daemon=True
    )
    thread.start()
    result = run_job(_job("HANG"), settings, cancel=cancel)
    assert result.status is Status.INTERRUPTED
    probe = _new_probe(probe_dir, before)
    assert _gone(probe["pid"], probe["grandchild"], within=5)


def _wait_for_probe(probe_dir: Path, before: dict[int, dict], within: float = 120) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        new = [v for k, v in _probes(probe_dir).items() if k not in before]
        if new and "grandchild" in new[0]:
            return True
        time.sleep(0.1)
    return False


def test_crash_signal_is_reported(settings, probe_dir):
    before = _probes(probe_dir)
    result = run_job(_job("SEGFAULT"), settings)
    assert result.status is Status.CRASH
    assert result.message == "trial process killed by SIGSEGV"
    assert "Fatal Python error" in result.stderr_tail  # faulthandler, into the trial's file
    assert _server_of(_new_probe(probe_dir, before)).python == RunnerSettings.python


def test_other_interpreter_gets_its_own_server(settings, probe_dir, tmp_path):
    """--trial-python: a different interpreter path is a different server."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    before = _probes(probe_dir)
    result = run_job(_job("SEGFAULT"), replace(settings, python=str(python)))
    assert result.message == "trial process killed by SIGSEGV"
    server = _server_of(_new_probe(probe_dir, before))
    assert server.python == str(python)
    server.close()


def test_server_that_cannot_start_falls_back_to_spawn(settings, probe_dir, tmp_path):
    python = tmp_path / "python"  # runs trial processes, but not the server
    python.write_text(
        '#!/bin/sh\n[ "$2" = autotune.launch.forkserver ] && { echo no server here >&2; exit 3; }\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    before = _probes(probe_dir)
    with pytest.warns(RuntimeWarning, match="no server here"):
        result = run_job(_job("SEGFAULT"), replace(settings, python=str(python)))
    assert result.message == "trial process killed by SIGSEGV"
    assert _new_probe(probe_dir, before)["ppid"] == os.getpid()  # spawned


def test_tt_backend_keeps_plain_spawn():
    from autotune.backends import get_backend

    assert get_backend("cpu").fork_trials and get_backend("cpu-emulate-tt").fork_trials
    assert not get_backend("tt").fork_trials


TUNER = """
import sys
from autotune.launch import forkserver
from autotune.wire import TrialConfig, TrialJob
from autotune.launch.runner import RunnerSettings, run_job

def job(study):
    return TrialJob(TrialConfig("tests.fixtures.forkserver_studies:" + study, "cpu", 64))

run_job(job("SEGFAULT"), RunnerSettings())
(server,) = forkserver.servers()
print(server.proc.pid, flush=True)
if sys.argv[1] == "hang":
    run_job(job("HANG"), RunnerSettings())
"""


@pytest.mark.parametrize("how", ["exits", "killed"])
def test_no_server_outlives_its_tuner(probe_dir, how):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    arg = "hang" if how == "killed" else "done"
    tuner = subprocess.Popen(
        [sys.executable, "-c", TUNER, arg], env=env, stdout=subprocess.PIPE, text=True
    )
    assert tuner.stdout is not None
    server_pid = int(tuner.stdout.readline())
    if how == "exits":
        assert tuner.wait(timeout=60) == 0
        assert _gone(server_pid)
        return
    before = _probes(probe_dir)  # the SEGFAULT trial's is in; HANG's comes next
    assert _wait_for_probe(probe_dir, before)
    probe = _new_probe(probe_dir, before)
    tuner.send_signal(signal.SIGKILL)  # no cleanup at all: the server sees EOF
    tuner.wait()
    assert _gone(server_pid, probe["pid"], probe["grandchild"])
