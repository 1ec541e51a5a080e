"""The `Backend` contract, one suite run against every implementation.

As Optuna runs one storage test case against every storage (a fixture parametrized over the
storage kinds), this file checks what `autotune.backends.base.Backend` promises in its
docstrings, the same way, for each backend: cpu; cpu-emulate-tt (what ``--emulate tt``
selects: ``autotune study --backend cpu --emulate tt`` runs backend "cpu-emulate-tt") on both
of its bf16 paths; tt; cuda. What is particular to one backend (tt's call order, cuda's CUDA
graphs and weight-only packing, the emulated rounding) stays in that backend's own file.

Mocked: only what cannot exist here.
- tt: there is NO Tenstorrent card here. Its trial-process side methods run against the tt-xla
  STAND-IN (tests/tt_standin, a mock of torch_xla and tt_torch that computes on the CPU), in a
  child interpreter with the stand-in on PYTHONPATH, as test_tt_backend.py runs the trial process:
  the stand-in patches torch globally, so it never enters this process.
- cuda: its trial-process side methods need an NVIDIA GPU and skip, with the reason, without one;
  its tuner-side methods run here for real.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from autotune.backends import Backend, backend_names, get_backend
from autotune.wire import Status, TrialConfig, TrialResult
from search_spaces import default_space
from studies import get_study, study_names

ROOT = Path(__file__).resolve().parent.parent
STANDIN = Path(__file__).resolve().parent / "tt_standin"


def _emulated(native: bool) -> Backend:
    from autotune.backends.cpu import CPUEmulatedTTBackend

    return CPUEmulatedTTBackend(native_bf16=native)


#: Every implementation, by test id: (registry name, how to make it). The emulated backend's
#: two bf16 paths are both run: which one `get_backend` picks depends on the CPU's flags.
IMPLEMENTATIONS: dict[str, tuple[str, Callable[[], Backend]]] = {
    "cpu": ("cpu", lambda: get_backend("cpu")),
    "cpu-emulate-tt[native-bf16]": ("cpu-emulate-tt", lambda: _emulated(True)),
    "cpu-emulate-tt[fp32-rounded]": ("cpu-emulate-tt", lambda: _emulated(False)),
    "tt": ("tt", lambda: get_backend("tt")),
    "cuda": ("cuda", lambda: get_backend("cuda")),
}
#: Trial-process side methods run in a child interpreter with the stand-in (never in this process).
IN_STANDIN = {"tt"}
NEEDS_GPU = {"cuda"}

TRIAL_STUDY = "mnist"
TRIAL_BATCH = 32


@pytest.fixture(
    scope="module",
    # `-m cuda` (bench/gpu_check.sh's selection) picks cuda's cases here too.
    params=[
        pytest.param(i, marks=pytest.mark.cuda) if i in NEEDS_GPU else i for i in IMPLEMENTATIONS
    ],
)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend(impl: str) -> Backend:
    return IMPLEMENTATIONS[impl][1]()


def test_every_registered_backend_is_under_contract():
    assert sorted({name for name, _ in IMPLEMENTATIONS.values()}) == backend_names()


def test_made_from_its_registry_name(impl, backend):
    name = IMPLEMENTATIONS[impl][0]
    assert isinstance(backend, Backend) and backend.name == name
    assert type(get_backend(name)) is type(backend)


# --- class attributes: what the tuner and the search space read --------------------------


def _distinct_nonempty(values: tuple[Any, ...]) -> bool:
    return isinstance(values, tuple) and len(values) > 0 and len(set(values)) == len(values)


def test_declared_dimensions_are_well_formed(backend):
    assert _distinct_nonempty(backend.weight_dtypes)
    assert all(isinstance(d, str) and d for d in backend.weight_dtypes)
    assert backend.weight_kinds and backend.weight_kinds <= {"linear", "conv"}
    assert _distinct_nonempty(backend.activation_dtypes)
    assert all(isinstance(d, str) and d for d in backend.activation_dtypes)
    assert isinstance(backend.has_trace, bool)
    fields = {f.name for f in dataclasses.fields(TrialConfig)}
    names = [k.name for k in backend.knobs]
    assert len(set(names)) == len(names) and not set(names) & (fields | {"weights"})
    for knob in backend.knobs:
        assert len(knob.choices) >= 2 and _distinct_nonempty(knob.choices), knob
        assert knob.doc.strip(), knob
    assert "torch" in backend.trial_modules and backend.install_hint.strip()
    env = backend.visible_devices_env
    assert env is None or re.fullmatch(r"[A-Z][A-Z0-9_]*", env)
    assert isinstance(backend.computes_on_host_cpu, bool) and isinstance(backend.fork_trials, bool)
    for status, pattern in backend.failure_patterns:
        assert isinstance(status, Status) and isinstance(pattern, re.Pattern)


@pytest.mark.parametrize("model", study_names())
def test_default_space_offers_what_the_backend_declares(backend, model):
    study = get_study(model)
    space = default_space(study, backend)
    dims = {d.name: d for d in space.dimensions}
    assert len(dims) == len(space.dimensions)  # names are unique
    assert ("trace" in dims) == backend.has_trace
    assert dims["activation_dtype"].choices == backend.activation_dtypes
    for knob in backend.knobs:
        assert dims[knob.name].choices == knob.choices
    # Weight dimensions: the backend's dtypes, over exactly the study's weights of the kinds
    # the backend honours, each weight in one dimension.
    honoured = [w.name for w in study.weights if w.kind in backend.weight_kinds]
    covered = []
    for d in space.weight_dimensions:
        assert d.choices == backend.weight_dtypes
        covered += [n for n in honoured if any(fnmatchcase(n, m) for m in d.members)]
    assert sorted(covered) == sorted(honoured)
    for pick in (0, -1):  # the first and the last choice of every dimension
        config = space.config_from({d.name: d.choices[pick] for d in space.dimensions})
        assert (config.model, config.backend) == (model, backend.name)
        assert TrialConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_reference_recipe_is_expressible_in_its_own_space(backend):
    from search_spaces import recipe_params

    recipe = backend.reference_recipe
    if recipe is None:
        return  # no reference to beat: nothing is queued
    fields = {f.name for f in dataclasses.fields(TrialConfig)} - {"model", "backend"}
    assert set(recipe) <= fields | {k.name for k in backend.knobs} | {"weights"}
    for model in study_names():
        found = recipe_params(default_space(get_study(model), backend), recipe)
        assert found is not None, model
        _, config = found
        assert config.batch_size == recipe.get("batch_size", config.batch_size)


def configs(backend: Backend, model: str = TRIAL_STUDY) -> dict[str, TrialConfig]:
    """Two points of the backend's default space at level 0 (eager: fast) and a small batch:
    every dimension at its first choice (highest precision, knobs off), and at its last."""
    space = default_space(get_study(model), backend)
    out = {}
    for label, pick in (("first", 0), ("last", -1)):
        values = {d.name: d.choices[pick] for d in space.dimensions}
        values.update(batch_size=TRIAL_BATCH, optimization_level=0)
        out[label] = space.config_from(values)
    return out


# --- compile options: exactly what each backend's docs say -----------------------------------

_INDUCTOR = {"backend": "inductor", "dynamic": False}
#: Per backend, per optimisation level (trace off, no knob set): the documented options.
DOCUMENTED_COMPILE_OPTIONS: dict[str, dict[int, dict[str, Any]]] = {
    # backends/cpu.py: the keyword arguments of torch.compile; none at level 0 (eager).
    "cpu": {0: {}, 1: _INDUCTOR, 2: {**_INDUCTOR, "options": {"freezing": True}}},
    "cpu-emulate-tt": {0: {}, 1: _INDUCTOR, 2: {**_INDUCTOR, "options": {"freezing": True}}},
    # backends/cuda.py: level 2 is max-autotune without inductor's own CUDA graphs.
    "cuda": {0: {}, 1: _INDUCTOR, 2: {**_INDUCTOR, "mode": "max-autotune-no-cudagraphs"}},
    # backends/tt.py: the string map given to torch_xla.set_custom_compile_options.
    "tt": {
        level: {"optimization_level": str(level), "enable_trace": "false"} for level in (0, 1, 2)
    },
}
#: Backends whose compile options are torch.compile's keyword arguments.
TORCH_COMPILE_KWARGS = {"cpu", "cpu-emulate-tt", "cuda"}


def test_compile_options_are_the_documented_ones(backend):
    documented = DOCUMENTED_COMPILE_OPTIONS[backend.name]
    for level, expected in documented.items():
        config = TrialConfig(TRIAL_STUDY, backend.name, 64, optimization_level=level)
        assert backend.compile_options(config) == expected, level
    # Exported as JSON, and the same for the same config.
    for config in configs(backend).values():
        options = backend.compile_options(config)
        assert json.loads(json.dumps(options)) == options == backend.compile_options(config)


def test_compile_options_are_accepted_by_torch_compile(backend):
    if backend.name not in TORCH_COMPILE_KWARGS:
        pytest.skip(f"{backend.name}: its compile options are not torch.compile's arguments")
    import torch

    for level in (1, 2):
        config = TrialConfig(TRIAL_STUDY, backend.name, 64, optimization_level=level)
        torch.compile(torch.nn.Identity(), **backend.compile_options(config))  # lazy: no build


def test_trial_env_is_strings(backend):
    for config in configs(backend).values():
        env = backend.trial_env(config)
        assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in env.items())


# --- failures: each pattern classifies the message it was written for -------------------------

_OOM = Status.OOM
_COMPILE = Status.COMPILE_ERROR
_CPU_MESSAGES: list[tuple[str, Status | None]] = [
    # c10/core/impl/alloc_cpu.cpp, as torch raises it
    (
        "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
        "allocate memory: you tried to allocate 1099511627776 bytes. Error code 12 (Cannot "
        "allocate memory)",
        _OOM,
    ),
    ("torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:", _COMPILE),
    ("torch._inductor.exc.InductorError: CppCompileError: C++ compile error", _COMPILE),
]
#: Per backend: messages as its runtime prints them, and the status each must get (None: a
#: crash, left unclassified). Every pattern of the backend must match one of them.
DOCUMENTED_MESSAGES: dict[str, list[tuple[str, Status | None]]] = {
    "cpu": _CPU_MESSAGES,
    "cpu-emulate-tt": _CPU_MESSAGES,
    "cuda": [
        # torch's caching allocator (c10/cuda/CUDACachingAllocator.cpp), on an 80 GB H100
        (
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has "
            "a total capacity of 79.19 GiB of which 1.06 GiB is free.",
            _OOM,
        ),
        ("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate`", _OOM),
        (
            "RuntimeError: fp8_e4m3 weights need compute capability >= 8.9; this GPU (Tesla T4 "
            "(compute capability 7.5)) has no hardware fp8",
            _COMPILE,
        ),
        ("RuntimeError: CUDA error: operation not permitted when stream is capturing", _COMPILE),
        ("torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:", _COMPILE),
        ("RuntimeError: CUDA error: an illegal memory access was encountered", None),
    ],
    # tt-metal's and tt-xla's own messages (bank_manager.cpp, program.cpp, mesh_trace.cpp,
    # module_builder.cc, MLIR diagnostics); Python itself only ever sees "Error code: 13".
    "tt": [
        (
            "Out of Memory: Not enough space to allocate 55444480 B L1 buffer across 70 banks, "
            "where each bank needs to store 792064 B, but bank size is 1393472 B",
            _OOM,
        ),
        (
            "Out of Memory: Not enough space to allocate 570425344 B DRAM buffer across 8 banks",
            _OOM,
        ),
        (
            "Out of Memory: Not enough space to allocate 4096 B L1_SMALL buffer across 64 banks",
            _OOM,
        ),
        (
            "Statically allocated circular buffers on core range [(x=0,y=0) - (x=7,y=7)] grow "
            "to 3445728 B which is beyond max L1 size of 1499136 B",
            _OOM,
        ),
        (
            "Statically allocated circular buffers in program 166 clash with L1 buffers on core "
            "range [(x=0,y=0) - (x=4,y=7)]. L1 buffer allocated at 600256",
            _OOM,
        ),
        (
            "Creating trace buffers of size 7929856B on MeshDevice 3, but only 2097152B is "
            "allocated for trace region.",
            Status.TRACE_ERROR,
        ),
        (
            "Always | FATAL | Creating trace buffers of size 751616B on device 0, but only 0B "
            "is allocated for trace region.",
            Status.TRACE_ERROR,
        ),
        ("module_builder.cc:1034 ERR| Failed to run TTIRToTTNNCommon pipeline", _COMPILE),
        ("ERR| Failed to convert from SHLO to TTIR module", _COMPILE),
        ("ERR| Failed to generate flatbuffer binary", _COMPILE),
        (
            "loc(\"dot.391\"): error: 'ttnn.scaled_dot_product_attention' op Query and result "
            "must have the same element type",
            _COMPILE,
        ),
        ("<unknown>:0: error: failed to legalize operation 'ttir.gather'", _COMPILE),
    ],
}
#: Unclassified by every backend: plain Python errors and harmless log lines are crashes.
NOT_A_DEVICE_FAILURE = [
    "RuntimeError: Error code: 13",  # all Python sees of a tt runtime failure: stderr decides
    "ValueError: Error code: 13",
    'Traceback (most recent call last):\n  File "trial_process.py", line 3, in main\nKeyError: x',
    "TypeError: linear(): argument 'input' must be Tensor, not NoneType",
    "warning: the trace region is large",
]


def _in_a_log(text: str) -> str:
    """`text` as the trial process's stderr holds it: among log lines, before Python's traceback."""
    return f"some log line\n{text}\nTraceback (most recent call last):\nRuntimeError: boom\n"


def test_classify_documented_messages(backend):
    for text, status in DOCUMENTED_MESSAGES[backend.name]:
        assert backend.classify(_in_a_log(text)) is status, text


def test_every_failure_pattern_has_a_documented_message(backend):
    texts = [text for text, _ in DOCUMENTED_MESSAGES[backend.name]]
    for status, pattern in backend.failure_patterns:
        assert any(pattern.search(t) for t in texts), f"{status}: {pattern.pattern}"


def test_generic_failures_and_plain_errors(backend):
    for text in ("MemoryError", "terminate called after throwing 'std::bad_alloc'"):
        assert backend.classify(_in_a_log(text)) is Status.OOM, text
    for text in NOT_A_DEVICE_FAILURE:
        assert backend.classify(text) is None, text


def test_retry_config_is_none_or_one_retry_of_the_same_trial(backend):
    stderr = "\n".join(text for text, _ in DOCUMENTED_MESSAGES[backend.name])
    for config in configs(backend).values():
        assert backend.retry_config(config, TrialResult(Status.OK)) is None
        for status in Status:
            result = TrialResult(status, "RuntimeError: Error code: 13", stderr_tail=stderr)
            retry = backend.retry_config(config, result)
            if retry is None:
                continue
            assert isinstance(retry, TrialConfig) and retry.key() != config.key()
            same = ("model", "backend", "batch_size", "activation_dtype", "weight_dtypes")
            assert all(getattr(retry, f) == getattr(config, f) for f in same), retry
            assert backend.retry_config(retry, result) is None  # retried once, not forever


# --- tuner side: no torch, no device library; check_devices in one line ------------------

_TUNER_SIDE = """
import json, sys
from autotune.backends import get_backend
from autotune.wire import Status, TrialResult
from autotune.errors import UsageError
from search_spaces import default_space
from studies import get_study, study_names
out = {}
for name in sys.argv[1:]:
    b = get_backend(name)
    for model in study_names():
        space = default_space(get_study(model), b)
        for pick in (0, -1):
            c = space.config_from({d.name: d.choices[pick] for d in space.dimensions})
            b.compile_options(c); b.trial_env(c); b.classify("x")
            b.retry_config(c, TrialResult(Status.TRACE_ERROR, "x"))
    try:
        b.check_devices(sys.executable, None)
        out[name] = None
    except UsageError as exc:
        out[name] = str(exc)
imported = [m for m in ("torch", "torch_xla", "tt_torch") if m in sys.modules]
print(json.dumps({"check_devices": out, "imported": imported}))
"""


@pytest.fixture(scope="module")
def tuner_side() -> dict[str, Any]:
    """Every backend's tuner-side calls, made in one fresh interpreter (what it imported).
    The stand-in is on its PYTHONPATH: importable there, so importing it would show."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(STANDIN)])}
    proc = subprocess.run(
        [sys.executable, "-c", _TUNER_SIDE, *backend_names()],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_tuner_side_imports_no_torch_or_device_library(tuner_side):
    assert tuner_side["imported"] == []


def test_check_devices_passes_or_says_why_in_one_line(impl, backend, tuner_side):
    message = tuner_side["check_devices"][backend.name]
    if impl in NEEDS_GPU:
        import torch

        if torch.cuda.is_available():
            assert message is None
        else:
            assert message and "\n" not in message and "GPU" in message
    else:  # nothing to probe: the device is this host (or the stand-in's CPU)
        assert message is None
        backend.check_devices(sys.executable, None)  # and in this process too


# --- trial-process side: a real study model through the trial's loop ------------------------------


def trial_facts(impl: str) -> dict[str, Any]:
    """The trial's loop on `impl`, as autotune.child.main runs it, and what came out, as JSON.
    Run in this process, or (stand-in) in a child that imports this module."""
    import torch

    backend = IMPLEMENTATIONS[impl][1]()
    study = get_study(TRIAL_STUDY)
    eval_inputs = study.eval_data()[0][:TRIAL_BATCH]
    with torch.no_grad():
        fp32 = study.build_model()(eval_inputs)
    facts: dict[str, Any] = {}
    threads = torch.get_num_threads()  # a config on N streams takes 1/N of them (CPU)
    for label, config in configs(backend).items():
        torch.set_num_threads(threads)
        with torch.no_grad():
            backend.initialize(config)
            run = backend.prepare(study.build_model(), config)
            x = backend.host_input(study.example_input(config.batch_size), config)
            y = backend.to_host(run(backend.to_device(x, config)))
            again = backend.to_host(run(backend.to_device(x, config)))
            # A batch that did not go through host_input (the eval set's).
            out = backend.to_host(run(backend.to_device(eval_inputs, config)))
            backend.synchronize()
        facts[label] = {
            "shape": list(y.shape),
            "devices": sorted({y.device.type, out.device.type}),
            "floating": y.is_floating_point(),
            "finite": bool(torch.isfinite(y.float()).all() and torch.isfinite(out.float()).all()),
            "repeatable": torch.equal(y, again),
            "eval_shape": list(out.shape),
            "agreement": (out.float().argmax(1) == fp32.argmax(1)).double().mean().item(),
        }
    # Token ids and masks: moved to the device and back, never cast (the contract).
    ids = torch.arange(6).reshape(2, 3)
    for label, config in configs(backend).items():
        for name, tensor in (("int64", ids), ("bool", ids > 2)):
            back = backend.to_host(backend.to_device(tensor, config))
            facts[label][f"{name}_kept"] = back.dtype == tensor.dtype and torch.equal(back, tensor)
    torch.set_num_threads(threads)
    facts["device_name"] = backend.device_name()
    facts["versions"] = backend.versions()
    facts["numerics"] = backend.numerics()
    return facts


def _facts_in_standin(impl: str) -> dict[str, Any]:
    """`trial_facts` in a child interpreter with the tt-xla stand-in (no card here)."""
    backend = IMPLEMENTATIONS[impl][1]()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    for config in configs(backend).values():  # set at spawn, as the runner does
        env.update(backend.trial_env(config))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(STANDIN)])
    code = (
        "import json, sys\nfrom tests.test_backend_contract import trial_facts\n"
        "print('FACTS ' + json.dumps(trial_facts(sys.argv[1])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, impl],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FACTS "))
    return json.loads(line.removeprefix("FACTS "))


@pytest.fixture(scope="module")
def facts(impl: str) -> dict[str, Any]:
    """What the trial-process side did on `impl` (once per implementation)."""
    if impl in NEEDS_GPU:
        import torch

        if not torch.cuda.is_available():
            pytest.skip(
                f"{impl}: needs an NVIDIA GPU: torch.cuda.is_available() is False here "
                f"(torch {torch.__version__}, CUDA {torch.version.cuda})"
            )
    return _facts_in_standin(impl) if impl in IN_STANDIN else trial_facts(impl)


@pytest.mark.parametrize("label", ["first", "last"])
def test_prepared_model_maps_a_batch_to_finite_cpu_outputs(facts, label):
    got = facts[label]
    assert got["shape"] == [TRIAL_BATCH, 10] == got["eval_shape"]
    assert got["devices"] == ["cpu"]  # to_host
    assert got["floating"] and got["finite"]
    assert got["repeatable"]  # eval mode, and nothing left over from the previous iteration


@pytest.mark.parametrize("label", ["first", "last"])
def test_integer_and_bool_inputs_are_never_cast(facts, label):
    assert facts[label]["int64_kept"] and facts[label]["bool_kept"]


@pytest.mark.parametrize("label", ["first", "last"])
def test_prepared_model_agrees_with_fp32(facts, label):
    # Even the last choice of every dimension (e.g. 4-bit block-float weights) keeps the
    # trained CNN's predictions on all but a few of the batch's images.
    assert facts[label]["agreement"] >= 0.9, facts[label]


def test_device_name_versions_and_numerics_are_strings(facts):
    assert isinstance(facts["device_name"], str) and facts["device_name"].strip()
    versions = facts["versions"]
    assert versions.get("torch") and all(isinstance(v, str) and v for v in versions.values())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in facts["numerics"].items())
