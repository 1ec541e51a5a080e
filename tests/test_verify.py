"""`autotune verify`: reading exports (both schema versions), the pass/fail rule, the
environment diff, and bad input (exit 2, one line, before any trial runs). The replay of a
real study's export is in test_around_a_study.py."""

from __future__ import annotations

import json

import pytest

from autotune.errors import UsageError
from autotune.export import EXPORT_SCHEMA, load_config
from autotune.verify import VerifyReport, environment_diff, read_export, replay_protocol

# What `autotune export` wrote before schema 2 (commit e19fa75): no protocol, no host.
SCHEMA_1 = {
    "schema": 1,
    "model": "mnist",
    "backend": "cpu",
    "batch_size": 128,
    "optimization_level": 0,
    "enable_trace": False,
    "weight_dtype_overrides": {"conv1.weight": "bf16", "fc1.weight": "bf16"},
    "activation_dtype": "bf16",
    "backend_options": {"channels_last": True},
    "compile_options": {},
    "env": {},
    "metrics": {
        "throughput_samples_per_s": 5000.0,
        "throughput_iqr": 100.0,
        "accuracy": 0.987,
        "accuracy_drop": 0.0,
        "agreement": 0.999,
        "pcc": 0.99999,
        "throughput_measurements": [4900.0, 5000.0, 5200.0],
    },
    "weight_groups": {},
    "constraint": {
        "max_accuracy_drop": 0.5,
        "min_agreement_percent": None,
        "unit": "top-1 points vs fp32",
    },
    "provenance": {
        "study": "mnist-cpu",
        "trial": 7,
        "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"},
        "device": "Intel(R) Xeon(R) Processor",
        "threads": 2,
    },
}


def write(tmp_path, data, name="best.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_schema_1_still_reads(tmp_path):
    data = read_export(write(tmp_path, SCHEMA_1))
    config = load_config(data)
    assert config.batch_size == 128 and config.activation_dtype == "bf16"
    assert config.weight_dtype_map == {"conv1.weight": "bf16", "fc1.weight": "bf16"}
    assert config.knob_map == {"channels_last": True}
    protocol, notes = replay_protocol(data)
    # Not recorded in schema 1: the study defaults, said so.
    assert protocol == {
        "measure_seconds": 1.0,
        "warmup_iters": 3,
        "eval_limit": None,
        "memory_limit_bytes": None,
        "timeout_s": 300.0,
        "latency_percentile": 95.0,
        "max_latency_ms": None,
        "objective": "throughput",
    }
    assert len(notes) == 1 and "schema 1 does not record" in notes[0]


def test_schema_2_protocol(tmp_path):
    protocol = {
        "measure_seconds": 0.2,
        "warmup_iters": 3,
        "eval_limit": 1000,
        "memory_limit_bytes": None,
        "timeout_s": 60.0,
    }
    data = read_export(write(tmp_path, {**SCHEMA_1, "schema": 2, "protocol": protocol}))
    # Schema 5's latency settings, unrecorded before: the defaults (no budget, throughput).
    latency = {"latency_percentile": 95.0, "max_latency_ms": None, "objective": "throughput"}
    assert replay_protocol(data) == (protocol | latency, [])


def test_schema_3_names_the_knobs(tmp_path):
    """Schema 3 renamed "backend_options" to "knobs"; both spellings load the same config."""
    old = {**SCHEMA_1, "schema": 2}
    new = {k: v for k, v in old.items() if k != "backend_options"}
    new |= {"schema": 3, "knobs": old["backend_options"]}
    assert load_config(read_export(write(tmp_path, new))) == load_config(old)
    assert load_config(new).knob_map == {"channels_last": True}


def test_schema_4_states_the_metric_and_older_exports_read_as_top_1(tmp_path):
    """Schema 4 names the study's metric; schemas 1-3 knew top-1 only, in points."""
    assert EXPORT_SCHEMA == 5  # 5 added the objective and latency budget (test_latency_e2e)
    old = read_export(
        write(
            tmp_path, {**SCHEMA_1, "metrics": {**SCHEMA_1["metrics"], "reference_accuracy": 0.9882}}
        )
    )
    assert old["metrics"]["metric_drop"] == 0.0 and "accuracy_drop" not in old["metrics"]
    assert old["metrics"]["reference_metric"] == pytest.approx(98.82)
    assert old["constraint"]["max_metric_drop"] == 0.5
    assert old["constraint"]["metric"]["name"] == "top-1 accuracy"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ({**SCHEMA_1, "schema": 99}, "unknown export schema version 99"),
        ({"model": "mnist"}, "no schema version"),
        ([1, 2], "no schema version"),
        ({k: v for k, v in SCHEMA_1.items() if k != "batch_size"}, "not a complete"),
        ({**SCHEMA_1, "metrics": {}}, "no measured throughput"),
    ],
)
def test_bad_exports(tmp_path, content, message):
    with pytest.raises(UsageError, match=message):
        read_export(write(tmp_path, content))


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        read_export(tmp_path / "nope.json")


def report(rounds, **kw) -> VerifyReport:
    base = {
        "source": "best.json",
        "schema": 2,
        "config": {},
        "provenance": {},
        "protocol": {},
        "rounds": rounds,
        "exported": {
            "throughput_samples_per_s": 1000.0,
            "throughput_measurements": [950.0, 1000.0, 1100.0],
            "metric_drop": 0.1,
        },
        "max_slowdown": 0.10,
        "max_metric_drop": 0.5,
        "min_agreement_percent": None,
        "environment": [],
    }
    return VerifyReport(**{**base, **kw})


def ok(tp: float, drop: float = 0.1, agreement: float = 0.999) -> dict:
    return {
        "status": "ok",
        "message": "",
        "throughput_samples_per_s": tp,
        "metric_drop": drop,
        "agreement": agreement,
    }


def test_pass_and_ratio_spread():
    r = report([ok(880.0), ok(950.0), ok(1010.0)])
    assert r.failure() is None
    assert r.ratios() == {
        "median": 0.95,
        "rounds_min": 0.88,
        "rounds_max": 1.01,
        "export_min": 0.95,
        "export_max": 1.1,
    }
    assert r.to_dict()["passed"] is True


def test_too_slow():
    r = report([ok(850.0), ok(890.0), ok(990.0)])
    assert r.failure().startswith("throughput 0.89x of the export")
    assert "10% slowdown allowed" in r.failure()
    assert report([ok(850.0)], max_slowdown=0.2).failure() is None


def test_accuracy_outside_tolerance_on_any_round():
    r = report([ok(1000.0), ok(1000.0, drop=0.6)])
    assert r.failure().startswith(
        "top-1 accuracy drop 0.6 points vs fp32 here, over the 0.5 allowed"
    )
    r = report([ok(1000.0, agreement=0.99)], min_agreement_percent=99.5)
    assert r.failure().startswith("agreement with fp32 99.000% here, under the 99.5%")


def test_failed_round():
    failed = {"status": "oom", "message": "can't allocate memory"}
    r = report([ok(1000.0), failed])
    assert r.failure() == "round 2 of 2 did not measure (oom): can't allocate memory"
    assert r.ratios()["median"] == 1.0  # from the rounds that measured


def test_environment_diff():
    rows = environment_diff(
        {"host": "a", "device": "cpu X", "threads": 2, "versions": {"torch": "2.12"}},
        {
            "hostname": "b",
            "device": "cpu X",
            "threads": 2,
            "cpu_count": 8,
            "versions": {"torch": "2.13", "python": "3.12"},
        },
    )
    by = {r["what"]: r for r in rows}
    assert by["host"]["changed"] and by["torch"]["changed"]
    assert not by["device"]["changed"] and not by["threads"]["changed"]
    # Unknown on one side (an older export) is not a change.
    assert by["cpu_count"] == {"what": "cpu_count", "exported": None, "here": 8, "changed": False}
    assert by["python"]["changed"] is False


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        ([], None, "cannot read"),
        ([], "[]", "no schema version"),
        (
            [],
            {**SCHEMA_1, "schema": EXPORT_SCHEMA + 1},
            f"unknown export schema version {EXPORT_SCHEMA + 1}",
        ),
        ([], {**SCHEMA_1, "model": "resnet9000"}, "unknown model 'resnet9000'"),
        ([], {**SCHEMA_1, "backend": "tpu"}, "unknown backend 'tpu'"),
        (["--rounds", "0"], SCHEMA_1, "--rounds must be at least 1"),
        (["--max-slowdown", "1.5"], SCHEMA_1, "--max-slowdown is a fraction"),
    ],
)
def test_cli_bad_input(cli, tmp_path, args, content, message):
    if content is not None:
        write(tmp_path, content)
    r = cli("verify", "best.json", *args, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr
