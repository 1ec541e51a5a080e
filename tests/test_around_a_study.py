"""Around a finished study, end to end on real studies in one SQLite file: `verify` replays
the export, optuna-dashboard serves the study, `report` renders in real headless Chromium,
and a study whose every trial failed is reported and plotted without a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from autotune.records import metric_names
from studies import TOP1
from tests.chromium import check_page, find_chromium, non_blank_fraction
from tests.conftest import FAST_ARGS, FAST_SPACE, CliResult, run_cli

pytestmark = pytest.mark.slow

FAST = (*FAST_ARGS, "--confirm", "1")
# One config, in bf16: the SEGFAULT fixture model crashes on every trial.
BF16_ONLY = (
    "batch_size = {min = 64, max = 64}\noptimization_level = [0]\n"
    'activation_dtype = ["bf16"]\nchannels_last = [false]\nstreams = [1]\n'
    '[weight_dtypes]\n"*" = ["bf16"]\n'
)


@pytest.fixture(scope="module")
def place(tmp_path_factory, cache_dir):
    """A directory with autotune.db holding: study mnist-cpu (3 real trials, one
    re-measurement), the mnist sensitivity record, and study "segfault" (all trials crash)."""
    work = tmp_path_factory.mktemp("around")
    (work / "fast.toml").write_text(FAST_SPACE)
    (work / "bf16.toml").write_text(BF16_ONLY)

    def cli(*args: str, timeout: float = 900) -> CliResult:
        return run_cli(work, cache_dir, *args, timeout=timeout)

    r = cli("study", "--model", "mnist", "--trials", "3", "--space", "fast.toml", *FAST)
    assert r.returncode == 0, r.stderr
    r = cli("sensitivity", "--model", "mnist", "--eval-limit", "500")
    assert r.returncode == 0, r.stderr
    r = cli(
        "study",
        "--model",
        "tests.fixtures.faulty_studies:SEGFAULT",
        "--study-name",
        "segfault",
        "--trials",
        "2",
        "--space",
        "bf16.toml",
        *FAST,
    )
    assert r.returncode == 0, r.stderr
    return work, cli


# --- verify ----------------------------------------------------------------------------


def exported(place) -> dict:
    work, cli = place
    if not (work / "best.json").exists():
        r = cli("export", "--study", "mnist-cpu", "-o", "best.json")
        assert r.returncode == 0, r.stderr
    return json.loads((work / "best.json").read_text())


def test_verify_replays_the_export(place):
    _, cli = place
    data = exported(place)
    assert data["schema"] == 5 and data["protocol"]["measure_seconds"] == 0.2
    # Throughput on this shared machine is noisy: the limit here only checks the plumbing;
    # the slowdown rule itself is tested on fixed numbers in test_verify.py.
    r = cli("verify", "best.json", "--rounds", "2", "--max-slowdown", "0.95", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] is True and out["reason"] is None
    assert [x["status"] for x in out["rounds"]] == ["ok", "ok"]
    tp = out["throughput"]
    assert tp["exported"] == data["metrics"]["throughput_samples_per_s"]
    assert len(tp["replayed"]) == 2 and all(v > 10 for v in tp["replayed"])
    assert tp["ratio"]["median"] == pytest.approx(tp["replayed_median"] / tp["exported"])
    # Same config, same eval set, same machine: the same predictions as in the study.
    acc = out["accuracy"]
    assert acc["accuracy"]["replayed"] == [data["metrics"]["accuracy"]] * 2
    assert acc["metric_drop"]["replayed"] == [data["metrics"]["metric_drop"]] * 2
    env = {e["what"]: e for e in out["environment"]}
    assert env["host"]["exported"] == env["host"]["here"] and not env["host"]["changed"]
    assert env["torch"]["here"] and not env["torch"]["changed"]
    # Every setting replayed as exported ("latency_rule" describes the rule; it sets nothing).
    settings = {k: v for k, v in data["protocol"].items() if k != "latency_rule"}
    assert out["protocol"] == settings and out["notes"] == []

    r = cli("verify", "best.json", "--rounds", "1", "--max-slowdown", "0.95")
    assert r.returncode == 0, r.stderr
    assert "throughput (samples/s)" in r.stdout and "result: PASS" in r.stdout


def test_verify_fails_with_one_line_reason(place):
    work, cli = place
    data = exported(place)
    # An export that claims 100x what this machine does: the replay is too slow.
    fast = {**data, "metrics": {**data["metrics"]}}
    fast["metrics"]["throughput_samples_per_s"] *= 100
    (work / "fast.json").write_text(json.dumps(fast))
    r = cli("verify", "fast.json", "--rounds", "1")
    assert r.returncode == 1
    assert (
        r.stderr.strip().splitlines()[-1].startswith("autotune: verify failed: throughput 0.0")
    ), r.stderr
    assert "result: FAIL: throughput" in r.stdout
    # A tolerance no config meets (5 points better than fp32): accuracy fails first.
    strict = {**data, "constraint": {**data["constraint"], "max_metric_drop": -5.0}}
    (work / "strict.json").write_text(json.dumps(strict))
    r = cli("verify", "strict.json", "--rounds", "1", "--format", "json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"].startswith("top-1 accuracy drop 0 points vs fp32 here")
    assert "over the -5 allowed" in r.stderr.strip().splitlines()[-1]


def test_verify_reads_a_schema_1_export(place):
    work, cli = place
    data = exported(place)
    # Schema 2 only added fields: schema 1 is schema 2 without them.
    old = {k: v for k, v in data.items() if k != "protocol"} | {"schema": 1}
    old["metrics"] = {k: v for k, v in data["metrics"].items() if k != "reference_metric"}
    old["provenance"] = {
        k: v for k, v in data["provenance"].items() if k not in ("host", "cpu_count")
    }
    (work / "old.json").write_text(json.dumps(old))
    r = cli("verify", "old.json", "--rounds", "1", "--max-slowdown", "0.95", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["schema"] == 1 and out["passed"] is True
    assert out["protocol"]["measure_seconds"] == 1.0 and out["protocol"]["eval_limit"] is None
    assert "schema 1 does not record" in out["notes"][0]
    assert {e["what"]: e for e in out["environment"]}["host"]["exported"] is None


# --- optuna-dashboard ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_optuna_dashboard_shows_the_study(place):
    work, _ = place
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    if not dashboard.exists():
        if os.environ.get("CI"):
            pytest.fail("optuna-dashboard is not installed (pip install -e '.[test]')")
        pytest.skip("optuna-dashboard not installed (pip install -e '.[dashboard]')")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(dashboard),
            f"sqlite:///{work / 'autotune.db'}",
            *("--host", "127.0.0.1", "--port", str(port), "--quiet"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                summaries = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 90 s"
                time.sleep(0.5)
        study = next(s for s in summaries if s["study_name"] == "mnist-cpu")
        assert study["directions"] == ["maximize", "minimize"]
        detail = _get(f"{base}/api/studies/{study['study_id']}?after=0")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    assert detail["objective_names"] == metric_names(TOP1.describe())
    assert detail["objective_names"][1] == "top-1 accuracy drop [points vs fp32]"
    finished = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(finished) == 3
    for t in finished:
        assert len(t["values"]) == 2
        # The constraint, as the dashboard reads it (it greys out infeasible trials).
        assert len(t["constraints"]) == 1 and t["constraints"][0] <= 0
        names = {p["name"] for p in t["params"]}
        assert {"log2_batch_size", "activation_dtype"} <= names
        # Raw: the point is the user attrs as the dashboard serves them.
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert "block_times" not in attrs  # raw samples live in a system attr
        assert attrs["status"] == "ok" and attrs["feasible"] == "True"
        assert int(attrs["blocks"]) >= 5 and json.loads(attrs["metrics"])["accuracy"] > 0.9
        longest = max(len(v) for v in attrs.values())
        assert longest < 600, f"a user attr of {longest} characters"


# --- report in a real browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        reason = "chromium not installed (apt-get install chromium): browser checks skipped"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)  # printed: pytest runs with -rs
    return path


def test_browser_check_sees_errors(chromium, tmp_path):
    """The check below can fail: a page with a script error, a console error, a missing
    image and a broken data URI is reported as such."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>x</title></head><body><p>hi</p>"
        '<img src="missing.png"><img src="data:image/png;base64,AAAA">'
        "<script>console.error('boom'); nosuch();</script></body></html>"
    )
    result = check_page(chromium, page.as_uri())
    problems = "\n".join(result.problems)
    assert "console.error: boom" in problems and "nosuch is not defined" in problems
    assert "ERR_FILE_NOT_FOUND" in problems
    assert result.images == 2 and result.broken_images == 2


def test_report_renders_in_chromium(place, chromium):
    work, cli = place
    r = cli("report", "--study", "mnist-cpu", "-o", "report.html")
    assert r.returncode == 0, r.stderr
    page = (work / "report.html").read_text()
    # Self-contained: every image inline, nothing fetched from elsewhere.
    assert page.count('src="data:image/png;base64,') == 2  # Pareto plot, sensitivity chart
    assert "http://" not in page and "https://" not in page and "<script" not in page

    result = check_page(chromium, (work / "report.html").as_uri())
    assert result.problems == []
    assert result.images == 2 and result.broken_images == 0
    assert result.title == "autotune report: mnist-cpu"
    for section in (
        "Throughput, accuracy and latency",
        "The pick",
        "Failures by reason",
        "Trials",
        "Layer sensitivity",
        "Study options",
        "Environment",
        # Shell-quoted where needed (shlex.join): these names need no quotes.
        "autotune export --storage sqlite:///autotune.db --study mnist-cpu -o best.json",
        "1 re-measurement(s)",
    ):
        assert section in result.text, section
    ink, colours = non_blank_fraction(result.screenshot)
    assert ink > 0.05 and colours > 50, (ink, colours)
    (work / "report.png").write_bytes(result.screenshot)


def test_study_with_every_trial_failed(place, chromium):
    work, cli = place
    r = cli("plot", "--study", "segfault", "-o", "p.png")
    assert r.returncode == 1 and not (work / "p.png").exists()
    assert r.stderr.strip().splitlines() == [
        "autotune: study 'segfault': no measured trial to plot: 2 of 2 trials failed (2 crash)"
    ]
    r = cli("plot", "--study", "segfault", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["failures"] == {"crash": 2}

    r = cli("report", "--study", "segfault", "-o", "failed.html")
    assert r.returncode == 0, r.stderr
    result = check_page(chromium, (work / "failed.html").as_uri())
    assert result.problems == [] and result.images == 0
    assert "no measured trial to plot: 2 of 2 trials failed (2 crash)" in result.text
    assert "No feasible trial" in result.text
    assert "trial process killed by SIGSEGV" in result.text  # grouped by reason
    ink, _ = non_blank_fraction(result.screenshot)
    assert ink > 0.02
