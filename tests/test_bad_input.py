"""Bad input: one clear line on stderr, exit 2, no traceback, finished trials kept."""

from __future__ import annotations

import pytest

from tests.conftest import FAST_ARGS, UNSEEDED_ARGS


def _one_line_error(r, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("autotune: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "nope"], "unknown model 'nope'; known models: mnist"),
        (["--model", "mnist", "--backend", "tpu"], "unknown backend 'tpu'"),
        (["--model", "mnist", "--trials", "0"], "--trials must be at least 1"),
        (["--model", "mnist", "--trials", "-3"], "--trials must be at least 1"),
        (["--model", "mnist", "--jobs", "0"], "--jobs must be at least 1"),
        (["--model", "mnist", "--devices", "0,1"], "has no device selection"),
        (
            ["--model", "mnist", "--storage", "postgresql://nobody@127.0.0.1:1/none"],
            "cannot open storage",
        ),
        (["--model", "mnist", "--backend", "tt", "--emulate", "tt"], "runs on the cpu backend"),
        (["--model", "mnist", "--storage", "sqlite:////no/such/dir/x.db"], "does not exist"),
        (["--model", "mnist", "--storage", "nosuchdialect://x"], "cannot open storage"),
        (["--model", "mnist", "--trial-python", "/no/python"], "does not exist"),
        (["--model", "mnist", "--max-batch-size", "100"], "power of two"),
        (["--model", "no.such.module:STUDY"], "cannot load model"),
    ],
)
def test_study_bad_input(cli, args, expected):
    assert expected in _one_line_error(cli("study", *args, "--no-progress"))


@pytest.mark.parametrize("seconds", ["0", "-2"])
def test_heartbeat_must_be_positive(cli, tmp_path, fast_space, seconds):
    """0 would busy-loop the wait for other hosts' last trials; a negative interval raised
    from time.sleep. Refused before anything runs (a 1-trial study would otherwise finish)."""
    args = ("--trials", "1", "--space", str(fast_space), *UNSEEDED_ARGS)
    r = cli("study", "--model", "mnist", "--heartbeat", seconds, *args, timeout=300)
    assert f"--heartbeat must be at least 1 second, not {seconds}" in _one_line_error(r)
    assert not (tmp_path / "autotune.db").exists()
    r = cli("worker", "--study", "mnist-cpu", "--heartbeat", seconds)
    assert f"--heartbeat must be at least 1 second, not {seconds}" in _one_line_error(r)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ('activation_dtype = ["fp8"]', 'activation_dtype has no choice "fp8"'),
        ("[weight_dtypes]\n'fc1.weight' = ['bfp_bf4']", 'has no choice "bfp_bf4"'),
        ("[weight_dtypes]\n'attn*' = ['bf16']", "glob 'attn*' matches no tunable weight"),
        ("warp_size = [32]", "unknown dimension 'warp_size'"),
        ("trace = [true]", "unknown dimension 'trace'"),  # no trace on CPU
        ("batch_size = {min = 3000, max = 3500}", "no power-of-two batch size"),
        ("optimization_level = [", "malformed"),
    ],
)
def test_bad_space_file(cli, tmp_path, space, expected):
    path = tmp_path / "space.toml"
    path.write_text(space)
    r = cli("study", "--model", "mnist", "--space", str(path), "--no-progress")
    assert expected in _one_line_error(r)


def test_space_file_wrong_extension_and_missing(cli, tmp_path):
    (tmp_path / "space.ini").write_text("{}")
    assert "use a .toml, .yaml" in _one_line_error(
        cli("study", "--model", "mnist", "--space", "space.ini")
    )
    # A .json space is an export of an emulated study (its math-fidelity verdict).
    (tmp_path / "space.json").write_text("{}")
    assert "is an autotune export" in _one_line_error(
        cli("study", "--model", "mnist", "--space", "space.json")
    )
    assert "cannot read space file" in _one_line_error(
        cli("study", "--model", "mnist", "--space", "missing.toml")
    )


@pytest.mark.parametrize("command", ["show", "plot", "export"])
def test_unknown_study(cli, command):
    r = cli(command, "--study", "ghost", "--storage", "sqlite:///empty.db")
    assert "no study 'ghost'" in _one_line_error(r)


@pytest.mark.slow
def test_changed_space_is_refused_and_trials_kept(cli, tmp_path, fast_space):
    r = cli("study", "--model", "mnist", "--trials", "1", "--space", str(fast_space), *FAST_ARGS)
    assert r.returncode == 0, r.stderr
    r = cli("study", "--model", "mnist", "--trials", "2", *FAST_ARGS)
    line = _one_line_error(r)
    assert "exists with a different space" in line and "--study-name" in line
    r = cli("show", "--study", "mnist-cpu", "--format", "json")
    assert r.returncode == 0 and '"status": "ok"' in r.stdout


def test_help_is_fast_and_torch_free():
    import subprocess
    import sys

    code = (
        "import sys; from autotune.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_no_seed_is_a_hidden_alias_of_no_starting_points():
    """Old scripts keep working; --help names only the new flag (seed = the RNG seed)."""
    import contextlib
    import io

    from autotune.cli import build_parser

    parse = build_parser().parse_args
    for flag in ("--no-starting-points", "--no-seed"):
        assert not parse(["study", "--model", "mnist", flag]).starting_points
    assert parse(["study", "--model", "mnist"]).starting_points
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
        parse(["study", "--help"])
    assert "--no-starting-points" in help_text.getvalue()
    assert "--no-seed" not in help_text.getvalue()


def test_worker_python_is_a_hidden_alias_of_trial_python():
    """`worker` names only the `autotune worker` command now; --worker-python still parses."""
    import contextlib
    import io

    from autotune.cli import build_parser

    parse = build_parser().parse_args
    for cmd in (["study", "--model", "mnist"], ["worker", "--study", "s"], ["verify", "b.json"]):
        for flag in ("--trial-python", "--worker-python"):
            assert parse([*cmd, flag, "/x/python"]).trial_python == "/x/python"
        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
            parse([*cmd[:1], "--help"])
        assert "--trial-python" in help_text.getvalue()
        assert "--worker-python" not in help_text.getvalue()


def _pythons() -> list[str]:
    """This interpreter, plus real 3.11/3.12 interpreters found on PATH or in pyenv."""
    import glob
    import os
    import shutil
    import subprocess
    import sys

    found = {sys.executable}
    candidates = [
        "python3.11",
        "python3.12",
        *glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[12]*/bin/python3.1[12]")),
    ]
    for name in candidates:
        if shutil.which(name):
            probe = "import sys; assert sys.version_info >= (3, 11); print(sys.executable)"
            out = subprocess.run([name, "-c", probe], capture_output=True, text=True)
            if out.returncode == 0:
                found.add(out.stdout.strip())
    return sorted(found)


@pytest.mark.parametrize("python", _pythons())
def test_trial_process_module_needs_no_tuner_dependencies(python):
    """The trial process runs in device environments (e.g. tt-xla's Python 3.12) that may lack
    optuna, sqlalchemy, matplotlib; it imports torch only when a trial runs."""
    import subprocess

    from tests.conftest import ROOT

    code = (
        "import sys\n"
        "for name in ('optuna', 'sqlalchemy', 'matplotlib', 'tqdm', 'yaml', 'torch'):\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "import autotune.child.main, autotune.child.trial\n"
        "import autotune.backends.cpu, autotune.backends.tt\n"
        "import studies.mnist\n"
        "print('ok')"
    )
    out = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "ok", out.stderr
