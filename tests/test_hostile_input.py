"""Hostile and careless input (issue 23): each case one line on stderr and exit 2, never a
traceback, a false pass, a leaked password or a command that runs more than it says.

Loaders are called in-process where they can be (fast, and what the property tests need);
the command line runs where the case is about what a user sees."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shlex
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotune.backends import get_backend
from autotune.errors import UsageError
from autotune.export import render
from autotune.records import StudyRecord, TrialRecord, finished_trial, write_study
from autotune.secrets import masked_url
from autotune.verify import read_export, verify
from search_spaces import SpaceError, default_space, load_space_file
from studies import get_study
from tests.test_bad_input import _one_line_error

EXPORT = {
    "schema": 4,
    "model": "mnist",
    "backend": "cpu",
    "batch_size": 64,
    "optimization_level": 0,
    "enable_trace": False,
    "weight_dtype_overrides": {},
    "activation_dtype": "fp32",
    "knobs": {},
    "compile_options": {},
    "env": {},
    "metrics": {"throughput_samples_per_s": 1000.0, "metric_drop": 0.0, "accuracy": 0.98},
    "weight_groups": {},
    "protocol": {
        "measure_seconds": 0.2,
        "warmup_iters": 3,
        "eval_limit": 200,
        "memory_limit_bytes": None,
        "timeout_s": 300,
    },
    "constraint": {
        "metric": {"name": "top-1 accuracy", "unit": "points", "higher_is_better": True},
        "max_metric_drop": 0.5,
        "min_agreement_percent": None,
        "unit": "points vs fp32",
    },
    "reference": None,
    "provenance": {"study": "s", "trial": 0, "versions": {}, "threads": 2, "host": "h"},
}


def _with(path: str, value: object) -> dict:
    """EXPORT with the field at dotted `path` set to `value`."""
    data = json.loads(json.dumps(EXPORT))
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


def _write(tmp_path: Path, data: object, name: str = "best.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, message
    return message


# --- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret", "shown"),
    [
        (
            "postgresql://bob:hunter2secret@127.0.0.1:notaport/db",
            "hunter2secret",
            "postgresql://bob:***@127.0.0.1:notaport/db",
        ),
        ("postgresql://bob:p@ss@host/db", "p@ss", "postgresql://bob:***@host/db"),
        ("postgresql://bob:a/b?c#d@host:5432/db", "a/b?c#d", "postgresql://bob:***@host:5432/db"),
        ("mysql://u@h/db?password=topsecret", "topsecret", "mysql://u@h/db?password=***"),
        ("sqlite:////home/u@x/a.db", None, "sqlite:////home/u@x/a.db"),
    ],
)
def test_passwords_are_masked_whether_the_url_parses_or_not(url, secret, shown):
    assert masked_url(url) == shown
    if secret:
        assert secret not in masked_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:hunter2secret@127.0.0.1:notaport/db",
        "postgresql://bob:p@ss@127.0.0.1:1/db",
    ],
)
def test_no_command_prints_a_password(cli, url):
    secret = "hunter2secret" if "hunter2" in url else "p@ss"
    for args in (["study", "--model", "mnist"], ["show", "--study", "s"]):
        r = cli(*args, "--storage", url)
        line = _one_line_error(r)
        assert "cannot open storage" in line and "***" in line
        assert secret not in r.stderr + r.stdout
        assert "ss@" not in line  # no part of it either, as the host name a parser made up
        if secret == "p@ss":
            assert "percent-encoded, as %40" in line


# --- suggested commands -------------------------------------------------------------------

HOSTILE_NAME = "x'; touch PWN; echo '"


def _readable_study(db: Path, name: str, metrics: dict | None = None) -> str:
    """A study as a tuner leaves it (record, two measured trials), written directly."""
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"])
    record = StudyRecord(
        options={"model": "mnist", "backend": "cpu", "max_accuracy_drop": 0.5},
        trials_budget=2,
        metric={"name": "top-1 accuracy", "unit": "points", "higher_is_better": True},
        reference_metric=98.8,
    )
    write_study(study, record)
    for i, tp in enumerate((1000.0, 2000.0)):
        config = {"model": "mnist", "backend": "cpu", "batch_size": 64 * (i + 1)}
        trial = TrialRecord(
            status="ok",
            config={**config, "optimization_level": 0, "trace": False},
            config_key=json.dumps(config),
            metrics=metrics or {"throughput_samples_per_s": tp, "metric_drop": 0.1},
            iters_per_block=1,
        )
        block = 64 * (i + 1) / tp
        study.add_trial(
            finished_trial(
                trial,
                values=[tp, 0.1],
                constraints={"metric_drop": -0.4},
                block_times=[block] * 5,
            )
        )
    return url


def test_the_reports_commands_are_shell_quoted(tmp_path):
    from autotune.report import build_report

    url = _readable_study(tmp_path / "s.db", HOSTILE_NAME)
    page = build_report(url, HOSTILE_NAME)
    block = re.search(r"<p>Export and check it:</p><pre>(.*?)</pre>", page, re.S)
    assert block is not None
    export, verify_line = html.unescape(block.group(1)).splitlines()
    assert shlex.split(export)[:6] == [
        "autotune",
        "export",
        "--storage",
        url,
        "--study",
        HOSTILE_NAME,
    ]
    # Run as a shell runs it, autotune replaced by a command that does nothing.
    subprocess.run(["sh", "-c", "autotune() { :; }; " + export], cwd=tmp_path, check=True)
    assert not (tmp_path / "PWN").exists()
    assert shlex.split(verify_line.split("#")[0]) == ["autotune", "verify", "best.json"]


# --- export and verify --------------------------------------------------------------------


def test_what_export_writes_verify_reads(tmp_path):
    """The checks refuse nothing `autotune export` writes (every field of the schema)."""
    from autotune.export import export_dict

    study = optuna.load_study(study_name="s", storage=_readable_study(tmp_path / "s.db", "s"))
    path = tmp_path / "best.json"
    path.write_text(render(export_dict(study), "json"))
    assert read_export(path)["metrics"]["throughput_samples_per_s"] > 0


def test_export_never_writes_bare_nan():
    text = render({"metrics": {"a": math.nan, "b": [math.inf, 1.0]}}, "json")
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the export"))
    assert data == {"metrics": {"a": None, "b": [None, 1.0]}}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("metrics.throughput_samples_per_s", math.nan, "throughput_samples_per_s must be a finite"),
        ("metrics.throughput_samples_per_s", -5, "throughput_samples_per_s must be a finite"),
        (
            "metrics.throughput_samples_per_s",
            "fast",
            "throughput_samples_per_s must be int | float",
        ),
        ("metrics.metric_drop", math.inf, "metrics.metric_drop must be a finite number"),
        ("constraint.max_metric_drop", math.nan, "constraint.max_metric_drop must be a finite"),
        ("constraint.min_agreement_percent", 101, "min_agreement_percent must be a finite"),
        ("metrics", [1], "metrics must be dict"),
        ("provenance", "x", "provenance must be dict"),
        ("protocol", 3, "protocol must be dict"),
        ("protocol.measure_seconds", "x", "protocol.measure_seconds must be int | float"),
        ("protocol.measure_seconds", 0, "protocol.measure_seconds must be a finite number above"),
        ("protocol.memory_limit_bytes", 1, "protocol.memory_limit_bytes must be at least"),
        ("batch_size", True, "batch_size must be int"),
        ("batch_size", 0, "batch_size must be at least 1"),
        ("enable_trace", "yes", "enable_trace must be bool"),
        ("weight_dtype_overrides", {"fc1.weight": 8}, "weight_dtype_overrides['fc1.weight']"),
        ("knobs", [], "knobs must be dict"),
        ("model", "", "model is empty"),
        ("schema", True, "unknown export schema version True"),
        ("schema", "4", "unknown export schema version '4'"),
    ],
)
def test_verify_refuses_what_it_cannot_trust(tmp_path, field, value, message):
    with pytest.raises(UsageError) as caught:
        read_export(_write(tmp_path, _with(field, value)))
    assert message in _one_line(caught.value)


def test_an_old_export_with_a_nan_accuracy_limit_is_refused(tmp_path):
    """Schema 3 called it constraint.max_accuracy_drop: NaN there turned the gate off."""
    data = {**EXPORT, "schema": 3, "constraint": {"max_accuracy_drop": math.nan}}
    data["metrics"] = {"throughput_samples_per_s": 1000.0, "accuracy_drop": 0.0}
    with pytest.raises(UsageError, match=r"constraint\.max_metric_drop must be a finite"):
        read_export(_write(tmp_path, data))


def test_verify_imports_no_module_an_export_names(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "sneaky.py").write_text(f"open({str(marker)!r}, 'w').close()\nSTUDY = None\n")
    monkeypatch.chdir(tmp_path)
    for model in ("sneaky.py:STUDY", "this:s"):
        path = _write(tmp_path, _with("model", model))
        with pytest.raises(UsageError) as caught:
            verify(path, rounds=1)
        line = _one_line(caught.value)
        assert f"names the model {model!r}" in line and "--model" in line
    assert not marker.exists()


def test_verify_command_line_refuses_a_named_module(cli, tmp_path):
    _write(tmp_path, _with("model", "this:s"))
    r = cli("verify", "best.json", "--rounds", "1")
    assert "names the model 'this:s'" in _one_line_error(r)
    assert "Zen of Python" not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metrics.throughput_samples_per_s", math.nan),
        ("constraint.max_metric_drop", math.nan),
        ("provenance", "x"),
        ("protocol.measure_seconds", "x"),
    ],
)
def test_verify_command_line_bad_fields(cli, tmp_path, field, value):
    _write(tmp_path, _with(field, value))
    r = cli("verify", "best.json", "--rounds", "1", timeout=120)
    assert "is not a valid autotune export" in _one_line_error(r)
    assert "round 1" not in r.stderr  # refused before any round ran


# --- bad options and files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--seed", "-1"], "--seed must be a finite number at least 0"),
        (["--seed", str(2**32)], "--seed must be at most"),
        (["--timeout-per-trial", "0"], "--timeout-per-trial must be a finite number above 0"),
        (["--max-batch-size", "0"], "--max-batch-size must be a finite number at least 1"),
        (["--measure-seconds", "-1"], "--measure-seconds must be a finite number above 0"),
        (["--measure-seconds", "nan"], "--measure-seconds must be a finite number"),
        (["--stop-slower", "nan"], "--stop-slower must be 0 (off) or above 1, not nan"),
        (["--memory-limit", "1"], "--memory-limit must be at least 64M"),
        (["--max-accuracy-drop", "inf"], "--max-accuracy-drop must be a finite number"),
        (["--min-agreement", "150"], "--min-agreement is a percentage"),
        (["--storage-retry-seconds", "-1"], "--storage-retry-seconds must be a finite number"),
        (["--model", "bad_syntax.py:X"], "cannot load model 'bad_syntax.py:X': SyntaxError"),
        (["--model", "raises.py:X"], "cannot load model 'raises.py:X': RuntimeError: boom"),
        (["--model", ":X"], "cannot load model ':X'"),
        (["--model", ".rel:X"], "cannot load model '.rel:X'"),
    ],
)
def test_study_refuses_absurd_values_before_anything_is_created(cli, tmp_path, args, expected):
    (tmp_path / "bad_syntax.py").write_text("def (:\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    if args[0] != "--model":
        args = ["--model", "mnist", *args]
    r = cli("study", *args, "--trials", "1", "--no-progress")
    assert expected in _one_line_error(r)
    assert not (tmp_path / "autotune.db").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('batch_size = {min = "a"}', "batch_size min and max are integers"),
        ("batch_size = {min = true}", "batch_size min and max are integers"),
        (b"batch_size = [\xff\xfe]", "is not UTF-8 text"),
    ],
)
def test_bad_space_files(cli, tmp_path, content, expected):
    path = tmp_path / "space.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = cli("study", "--model", "mnist", "--space", str(path), "--no-progress")
    assert expected in _one_line_error(r)


@pytest.mark.parametrize("command", ["plot", "report", "export"])
@pytest.mark.parametrize("where", ["missing", "read-only"])
def test_outputs_into_a_directory_that_cannot_take_them(cli, tmp_path, command, where):
    _readable_study(tmp_path / "s.db", "s")
    target = tmp_path / "out"
    if where == "read-only":
        target.mkdir()
        target.chmod(0o555)
        if os.access(target, os.W_OK):  # root writes anywhere: a file where the dir should be
            target.chmod(0o755)
            target.rmdir()
            target.write_text("")
    name = {"plot": "p.png", "report": "r.html", "export": "b.json"}[command]
    r = cli(command, "--study", "s", "--storage", "sqlite:///s.db", "-o", f"out/{name}")
    if command == "export" and where == "missing":  # export makes the directory
        assert r.returncode == 0 and (target / name).exists(), r.stderr
        return
    assert "cannot write out" in _one_line_error(r)


def test_a_database_with_random_bytes_in_the_middle(cli, tmp_path):
    _readable_study(tmp_path / "s.db", "s")
    sqlite3.connect(tmp_path / "s.db").execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    data = bytearray((tmp_path / "s.db").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(range(256)) * 16
    (tmp_path / "s.db").write_bytes(bytes(data))
    r = cli("show", "--study", "s", "--storage", "sqlite:///s.db")
    assert "malformed" in _one_line_error(r)


@pytest.mark.parametrize(
    ("command", "metrics"),
    [
        ("show", {"throughput_samples_per_s": "fast"}),
        ("export", {"throughput_samples_per_s": [1]}),
        ("report", {"throughput_samples_per_s": math.nan, "metric_drop": 0.1}),
    ],
)
def test_hand_corrupted_records(cli, tmp_path, command, metrics):
    _readable_study(tmp_path / "s.db", "s", metrics=metrics)
    r = cli(command, "--study", "s", "--storage", "sqlite:///s.db", "-o", "out.html")
    if command == "show":
        r = cli(command, "--study", "s", "--storage", "sqlite:///s.db")
    assert "a trial's record is corrupt: metrics['throughput_samples_per_s']" in _one_line_error(r)


# --- property tests: random input to the loaders ------------------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutated_export() -> st.SearchStrategy:
    """EXPORT with a few fields, at any depth, replaced by random JSON values or removed."""
    paths = []
    for key, value in EXPORT.items():
        paths.append(key)
        if isinstance(value, dict):
            paths += [f"{key}.{k}" for k in value]
    return st.lists(st.tuples(st.sampled_from(paths), _json | st.just(...)), min_size=1, max_size=3)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=_mutated_export())
def test_random_exports_give_a_dict_or_one_line(tmp_path, changes):
    data = json.loads(json.dumps(EXPORT))
    for path, value in changes:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if value is ...:
                target.pop(last, None)
            else:
                target[last] = value
    try:
        read = read_export(_write(tmp_path, data))
    except UsageError as exc:
        _one_line(exc)
        return
    tp = read["metrics"]["throughput_samples_per_s"]
    assert isinstance(tp, int | float) and math.isfinite(tp) and tp > 0


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=_json | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_random_json_documents_give_one_line(tmp_path, document):
    text = document if isinstance(document, str) else json.dumps(document)
    try:
        read_export(_write(tmp_path, text))
    except UsageError as exc:
        _one_line(exc)


_space_values = st.recursive(
    _scalars | st.sampled_from(["bf16", "fp32", 64, 128, 0, 1, 2, "min", "max"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["min", "max", "fc1.weight", "conv*", "x"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
_space_keys = st.sampled_from(
    [
        "batch_size",
        "optimization_level",
        "activation_dtype",
        "channels_last",
        "weight_dtypes",
        "trace",
        "x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(spec=st.dictionaries(_space_keys, _space_values, max_size=4))
def test_random_space_specs_narrow_or_say_why_in_one_line(spec):
    space = default_space(get_study("mnist"), get_backend("cpu"))
    try:
        narrowed = space.narrowed(spec)
    except SpaceError as exc:
        _one_line(exc)
        return
    assert narrowed.size() >= 1


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=60), suffix=st.sampled_from([".toml", ".yaml", ".json"]))
def test_random_space_files_load_or_say_why_in_one_line(tmp_path, content, suffix):
    path = tmp_path / f"space{suffix}"
    path.write_bytes(content)
    try:
        data = load_space_file(path)
    except SpaceError as exc:
        _one_line(exc)
        return
    assert isinstance(data, dict)
