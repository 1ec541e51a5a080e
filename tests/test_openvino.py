"""OpenVINO as a CPU compiler (the `[openvino]` extra, installed by the test extra): real
OpenVINO on this CPU, no stand-in."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace

import pytest

from autotune.backends import get_backend
from autotune.backends.cpu import COMPILER, HAS_OPENVINO, NO_OPENVINO_NOTE
from autotune.sampler import BATCH, plan_next
from autotune.sampler import Observed as Seen
from autotune.wire import TrialConfig
from search_spaces import default_space
from studies import get_study
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")


def ov_config(act: str = "fp32", level: int = 2, streams: int = 1, **knobs) -> TrialConfig:
    return TrialConfig(
        model="mnist",
        backend="cpu",
        batch_size=32,
        optimization_level=level,
        activation_dtype=act,
        knobs=(("compiler", "openvino"), ("streams", streams), *knobs.items()),
    )


def test_the_space_offers_openvino_next_to_inductor_at_compiled_levels():
    space = default_space(get_study("mnist"), get_backend("cpu"))
    (dim,) = [d for d in space.dimensions if d.name == COMPILER.name]
    assert dim.choices == ("inductor", "openvino")
    values = {d.name: d.choices[0] for d in space.dimensions} | {"compiler": "openvino"}
    # Eager (level 0) compiles nothing: the config does not name a compiler.
    assert "compiler" not in space.config_from(values | {"optimization_level": 0}).knob_map
    assert space.config_from(values | {"optimization_level": 1}).knob_map["compiler"] == (
        "openvino"
    )


def test_compile_options_are_openvino_properties():
    backend = get_backend("cpu")
    options = backend.compile_options(ov_config("bf16", streams=2))
    assert options == {
        "compiler": "openvino",
        "properties": {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16",
            "NUM_STREAMS": "2",
        },
    }
    assert backend.compile_options(ov_config("fp32", level=0)) == {}


def _mnist(batch: int = 32):
    study = get_study("mnist")
    inputs, labels = study.eval_data()
    return study.build_model(), inputs[:batch], labels[:batch]


def test_openvino_fp32_matches_torch_and_bf16_keeps_the_predictions():
    import torch

    backend = get_backend("cpu")
    model, x, _ = _mnist()
    with torch.no_grad():
        want = model(x)
        fp32 = backend.prepare(_mnist()[0], ov_config("fp32"))
        got = fp32(backend.to_device(x, ov_config("fp32")))
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-4)
        bf16 = backend.prepare(_mnist()[0], ov_config("bf16"))(x)
    assert (bf16.argmax(1) == want.argmax(1)).float().mean() >= 0.95
    assert not torch.equal(bf16, got)  # the precision hint took effect


def test_openvino_inputs_stay_fp32_on_the_host():
    import torch

    backend = get_backend("cpu")
    x = torch.randn(2, 1, 28, 28)
    assert backend.to_device(x, ov_config("bf16", channels_last=True)) is x


def test_each_stream_thread_has_its_own_request():
    """Two threads calling one compiled model at once get their own batches' outputs (an
    infer request is not thread-safe: the model holds one per thread)."""
    import torch

    backend = get_backend("cpu")
    model, x, _ = _mnist(64)
    with torch.no_grad():
        want = model(x)
    run = backend.prepare(model, ov_config("fp32", streams=2))
    halves = [x[:32], x[32:]]
    run(halves[0])  # converts and compiles once, on the first call
    got: dict[int, list] = {0: [], 1: []}

    def serve(i: int) -> None:
        for _ in range(20):
            got[i].append(run(halves[i]))

    threads = [threading.Thread(target=serve, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        for out in got[i]:
            assert torch.allclose(out, want[32 * i : 32 * (i + 1)], atol=1e-4)


def test_the_strategy_spends_no_trial_on_what_openvino_ignores():
    """OpenVINO builds one model whatever the level (1 or 2), channels_last or a per-layer
    map say: every OpenVINO config the strategy proposes has them at fixed values, so no two
    proposals build the same model; eager configs name no compiler."""
    space = default_space(get_study("mnist"), get_backend("cpu"))
    dims = tuple(replace(d, choices=(1, 2)) if d.name == "streams" else d for d in space.dimensions)
    space = replace(space, dimensions=dims)
    start = plan_next(space, [])
    history = [Seen(start, 1000.0)]
    for i in range(60):
        nxt = plan_next(space, history)
        if nxt is None:
            break
        # OpenVINO wins 2x, so its configs become the bases the search moves from.
        history.append(Seen(nxt, (2000.0 if nxt["compiler"] == "openvino" else 900.0) - i))
    proposed = [h.params for h in history]
    openvino = [p for p in proposed if p["compiler"] == "openvino"]
    assert len(openvino) >= 3
    for p in openvino:
        assert p["optimization_level"] == 2 and p["channels_last"] is False
        assert len({v for k, v in p.items() if k.startswith("dtype:")}) == 1
    assert all(p["compiler"] == "inductor" for p in proposed if p["optimization_level"] == 0)
    configs = [space.config_from({**p, "batch_size": 2 ** p[BATCH]}).key() for p in proposed]
    assert len(configs) == len(set(configs))  # every trial builds a model of its own


def test_openvino_is_reached_from_an_eager_best():
    """Where inductor loses to eager (as on the token classifier), the best config is eager
    and OpenVINO, gated on a compiled level, must still be one move away from it."""
    space = default_space(get_study("mnist"), get_backend("cpu"))
    dims = tuple(replace(d, choices=(1,)) if d.name == "streams" else d for d in space.dimensions)
    space = replace(space, dimensions=dims)
    history = [Seen(plan_next(space, []), 1000.0)]
    for i in range(40):
        nxt = plan_next(space, history)
        if nxt is None or nxt["compiler"] == "openvino":
            break
        # Eager wins every comparison until OpenVINO is tried.
        history.append(Seen(nxt, (3000.0 if nxt["optimization_level"] == 0 else 500.0) - i))
    assert nxt is not None and nxt["compiler"] == "openvino", [h.params for h in history]
    eager = [h for h in history if h.params["optimization_level"] == 0]
    assert eager, "the search found eager best before OpenVINO"
    assert nxt["optimization_level"] == 2


def test_without_openvino_the_dimension_is_absent_and_one_line_says_so():
    """A trial interpreter where `import openvino` fails (a finder refuses it, as an
    environment without the extra would)."""
    code = (
        "import sys\n"
        "class Refuse:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'openvino':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Refuse)\n"
        "from autotune.backends import get_backend\n"
        "b = get_backend('cpu')\n"
        "print([k.name for k in b.knobs]); print(b.start_notes)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "'compiler'" not in out.splitlines()[0]
    assert NO_OPENVINO_NOTE in out
