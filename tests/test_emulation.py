"""TT numerics emulated on the CPU: layer grouping, sensitivity, seeded dtype maps, and
`--emulate tt` / `autotune sensitivity` end to end on both real studies."""

from __future__ import annotations

import json
from dataclasses import replace

import optuna
import pytest
import torch

from autotune.backends import get_backend
from autotune.backends._torch_dtypes import resolve_weight_map
from autotune.backends.cpu import CPUEmulatedTTBackend
from autotune.child import reference
from autotune.child.metrics import score
from autotune.child.sensitivity import fidelity_rows, one_at_a_time
from autotune.numerics import round_bfp
from autotune.records import FROM_SENSITIVITY, TrialRecord, read_sensitivity
from autotune.sensitivity import Sensitivity, dtype_starting_points
from autotune.wire import TrialConfig
from search_spaces import MAX_WEIGHT_PARAMS, default_space, group_weights
from studies import TOP1, Study, Weight, get_study


def test_group_weights():
    few = [f"l{i}.weight" for i in range(MAX_WEIGHT_PARAMS)]
    assert group_weights(few) == [(n, (n,)) for n in few]
    deep = [f"blocks.{b}.{r}.weight" for b in range(6) for r in ("q", "k", "v")] + ["head.weight"]
    assert group_weights(deep) == [
        (g, (g,))
        for g in ["blocks.*.q.weight", "blocks.*.k.weight", "blocks.*.v.weight", "head.weight"]
    ]
    wide = [f"l{i}.weight" for i in range(40)]
    groups = group_weights(wide)
    assert len(groups) <= MAX_WEIGHT_PARAMS
    assert [m for _, members in groups for m in members] == wide


def test_transformer_space_is_grouped_by_role():
    study = get_study("mnist_transformer")
    space = default_space(study, get_backend("cpu-emulate-tt"))
    dims = space.weight_dimensions
    assert len(study.weights) >= 24 and len(dims) == 8
    assert all(d.choices == ("bf16", "bfp_bf8", "bfp_bf4") for d in dims)
    values = {d.name: d.choices[0] for d in space.dimensions}
    values["dtype:blocks.*.ffn.fc1.weight"] = "bfp_bf4"
    config = space.config_from(values)
    resolved = resolve_weight_map([w.name for w in study.weights], config.weight_dtype_map)
    assert sorted(n for n, d in resolved.items() if d == "bfp_bf4") == [
        f"blocks.{i}.ffn.fc1.weight" for i in range(4)
    ]


class _OneLinear(torch.nn.Module):
    def __init__(self, row: list[float]) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([row + [0.0] * (16 - len(row))]))


EPS = 2.0**-20  # below bf16's resolution near 0.5: the bf16 cast drops it
# One 16-value block (shared exponent from 1.0). Each value sits within EPS of a rounding
# tie, so rounding the fp32 weight and rounding its bf16 cast (what the card packs: the
# recipe runs model.to(torch.bfloat16) before apply_weight_dtype_overrides) land on
# different sides. Expected values worked out by hand from DESIGN.md section 5.
HAND_VECTORS = {
    # bfp_bf8: steps of 1/64. bf16(0.5078125 + EPS) = 32.5/64, a tie -> even 32/64; the
    # fp32 value is above the tie -> 33/64. bf16(0.5234375 - EPS) = 33.5/64 -> 34/64; the
    # fp32 value is below it -> 33/64.
    "bfp_bf8": (
        [1.0, 0.5078125 + EPS, 0.5234375 - EPS],
        [1.0, 0.5, 0.53125],
        [1.0, 0.515625, 0.515625],
    ),
    # bfp_bf4: steps of 1/4. bf16(0.625 + EPS) = 2.5/4 -> 2/4 (fp32: 3/4); bf16(0.875 - EPS)
    # = 3.5/4 -> 4/4 (fp32: 3/4).
    "bfp_bf4": ([1.0, 0.625 + EPS, 0.875 - EPS], [1.0, 0.5, 1.0], [1.0, 0.75, 0.75]),
}


@pytest.mark.parametrize("native", [True, False], ids=["bf16", "fp32-rounded"])
@pytest.mark.parametrize("fmt", ["bfp_bf8", "bfp_bf4"])
def test_emulated_weights_are_the_card_rounding_of_the_bf16_cast(fmt, native):
    row, card, from_fp32 = HAND_VECTORS[fmt]
    backend = CPUEmulatedTTBackend(native_bf16=native)
    config = TrialConfig(
        "hand", backend.name, 1, activation_dtype="bf16", weight_dtypes=(("fc.weight", fmt),)
    )
    model = backend.prepare(_OneLinear(row), config)
    held = model.fc.weight.detach().float()[0, :3].tolist()
    assert held == card, f"rounding the fp32 weight would give {from_fp32}"


def test_bf16_cast_changes_the_card_values_of_fc1_as_measured():
    """Share of the shipped fc1.weight whose card value differs from rounding the fp32
    weight: 10.8% at bfp_bf8 and 0.9% at bfp_bf4, as measured independently (issue 8)."""
    study = get_study("mnist")
    fp32 = study.build_model().fc1.weight.detach()
    for fmt, share in (("bfp_bf8", 0.108), ("bfp_bf4", 0.009)):
        weights = (("fc1.weight", fmt),)
        config = TrialConfig("mnist", "cpu-emulate-tt", 1, weight_dtypes=weights)
        model = CPUEmulatedTTBackend().prepare(study.build_model(), config)
        held = model.fc1.weight.detach().float()
        differ = (held != round_bfp(fp32, fmt)).double().mean().item()
        assert abs(differ - share) < 0.0015, (fmt, differ)
        # Other layers hold their bf16 cast, as on the card.
        assert torch.equal(model.conv1.weight.detach().float(), _bf16_cast(study, "conv1.weight"))


def _bf16_cast(study, name: str) -> torch.Tensor:
    return dict(study.build_model().named_parameters())[name].detach().bfloat16().float()


class _InPlace(torch.nn.Module):
    """Changes a layer's output in place after the next layer started: a replay of the
    calls before `b` must not replay that change twice."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(32, 32)
        self.b = torch.nn.Linear(32, 32)
        self.c = torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x.flatten(1))
        g = self.b(h)
        h.mul_(0.5)
        return torch.log_softmax(self.c(torch.relu(g) + h), dim=1)


class _InPlaceStudy(Study):
    name = "in_place"
    description = "a toy model with an in-place op"
    sample_shape = (32,)
    weights = tuple(Weight(f"{n}.weight", "linear") for n in "abc")

    def build_model(self) -> torch.nn.Module:
        return _InPlace().eval()

    def eval_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        return torch.randn(300, 32, generator=g), torch.randint(0, 4, (300,), generator=g)


def _fp32(study: Study, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    ref = reference.compute(study.build_model().eval(), inputs)
    return ref, (ref.argmax(1) == labels).double().mean().item()


@pytest.mark.parametrize("native", [True, False], ids=["bf16", "fp32-rounded"])
@pytest.mark.parametrize(
    "name,limit",
    [
        ("mnist", 500),
        ("toy", 300),
        pytest.param("mnist_transformer", 240, marks=pytest.mark.slow),  # 52 cases
    ],
)
def test_sensitivity_replay_gives_the_full_computation_bit_for_bit(name, limit, native):
    """The pass replays the calls before each lowered weight's module; it must give exactly
    what computing every case in full gives (3+ batches: replayed past the checked one)."""
    study = _InPlaceStudy() if name == "toy" else get_study(name)
    inputs, labels = study.eval_data()
    inputs, labels = inputs[:limit], labels[:limit]
    ref, acc = _fp32(study, inputs, labels)
    backend = CPUEmulatedTTBackend(native_bf16=native)
    config = TrialConfig(name, backend.name, limit // 3, activation_dtype="bf16")
    fast = one_at_a_time(study, backend, config, inputs, labels, ref, acc)
    assert fast == one_at_a_time(study, backend, config, inputs, labels, ref, acc, replay=False)
    n_linear = sum(w.kind == "linear" for w in study.weights)
    assert len(fast) == 1 + 2 * n_linear and fast[0]["weight"] is None


@pytest.mark.parametrize(
    "name,weight",
    [
        ("mnist", "fc2.weight"),
        pytest.param("mnist_transformer", "blocks.1.ffn.fc1.weight", marks=pytest.mark.slow),
    ],
)
def test_sensitivity_row_is_what_a_trial_with_that_map_measures(name, weight):
    """Independent of the pass's machinery: one row against the emulated backend's own
    trial path (prepare, to_device, run) with that single weight lowered."""
    study = get_study(name)
    inputs, labels = study.eval_data()
    inputs, labels = inputs[:200], labels[:200]
    ref, acc = _fp32(study, inputs, labels)
    backend = CPUEmulatedTTBackend(native_bf16=False)
    # The pass runs convolutions channels_last; so does this trial, for the same bits.
    layout = (("channels_last", name == "mnist"),)
    config = TrialConfig(name, backend.name, 100, activation_dtype="bf16", knobs=layout)
    rows = one_at_a_time(study, backend, config, inputs, labels, ref, acc)
    lowered = replace(config, weight_dtypes=((weight, "bfp_bf4"),))
    run = backend.prepare(study.build_model(), lowered)
    with torch.no_grad():
        out = torch.cat([run(backend.to_device(c, lowered)).float() for c in inputs.split(100)])
    row = next(r for r in rows if r["weight"] == weight and r["dtype"] == "bfp_bf4")
    assert row == {"weight": weight, "dtype": "bfp_bf4", **score(out, ref, labels, TOP1, acc)}


@pytest.mark.parametrize("native", [True, False], ids=["bf16", "fp32-rounded"])
def test_fidelity_rows_are_what_a_trial_at_that_fidelity_measures(native):
    """The pass's per-fidelity rows against the emulated backend's own trial path (prepare,
    to_device, run) with only `math_fidelity` set; the baseline row is HiFi4."""
    study = get_study("mnist")
    inputs, labels = study.eval_data()
    inputs, labels = inputs[:200], labels[:200]
    ref, acc = _fp32(study, inputs, labels)
    backend = CPUEmulatedTTBackend(native_bf16=native)
    config = TrialConfig("mnist", backend.name, 100, activation_dtype="bf16")
    rows = fidelity_rows(study, backend, config, inputs, labels, ref, acc)
    assert [r["fidelity"] for r in rows] == ["hifi3", "hifi2", "lofi"]
    for row in rows:
        at = replace(config, knobs=(("math_fidelity", row["fidelity"]),))
        run = backend.prepare(study.build_model(), at)
        with torch.no_grad():
            out = torch.cat([run(backend.to_device(c, at)).float() for c in inputs.split(100)])
        expected = {"weight": None, "dtype": "bf16", "fidelity": row["fidelity"]}
        assert row == expected | score(out, ref, labels, TOP1, acc)
    baseline = one_at_a_time(study, backend, config, inputs, labels, ref, acc)[0]
    assert baseline["weight"] is None and baseline["fidelity"] == "hifi4"
    # Fewer phases, larger output error (LoFi truncates every product).
    errors = [r["mean_abs_error"] for r in [baseline, *rows]]
    assert errors[3] > errors[2] > errors[0]
    assert fidelity_rows(study, get_backend("cpu"), config, inputs, labels, ref, acc) == []


@pytest.mark.parametrize("name", ["mnist", "mnist_transformer"])
def test_fp32_rounded_to_bf16_predicts_as_bf16_compute(name):
    """Where a CPU has no fast bf16, the emulation computes in fp32 and rounds each op's
    output to bf16. On the full 10k eval set with every linear weight at bf16, bfp_bf8 or
    bfp_bf4 (Xeon, torch 2.13), its top-1 predictions matched native bf16 compute in all
    60,000 cases (agreement 1.0; logits within 0.25, bf16's step there). Checked here on
    2,000 samples per map."""
    study = get_study(name)
    inputs = study.eval_data()[0][:2000]
    linear = [w.name for w in study.weights if w.kind == "linear"]
    for fmt in ("bf16", "bfp_bf8", "bfp_bf4"):
        config = TrialConfig(
            name, "cpu-emulate-tt", 500, weight_dtypes=tuple((n, fmt) for n in linear)
        )
        outs = {}
        for native in (True, False):
            backend = CPUEmulatedTTBackend(native_bf16=native)
            run = backend.prepare(study.build_model(), config)
            with torch.no_grad():
                outs[native] = torch.cat(
                    [run(backend.to_device(c, config)).float() for c in inputs.split(500)]
                )
        assert torch.equal(outs[False], outs[False].bfloat16().float())  # bf16 values
        agreement = (outs[True].argmax(1) == outs[False].argmax(1)).double().mean().item()
        assert agreement >= 0.999, (fmt, agreement)
        assert (outs[True] - outs[False]).abs().max().item() <= 0.5


@pytest.mark.slow
def test_compiled_fp32_rounding_keeps_the_bf16_steps():
    """Under torch.compile the rounding must survive inductor (which by default drops
    fp32 -> bf16 -> fp32 round trips)."""
    study = get_study("mnist")
    inputs = study.eval_data()[0][:256]
    config = TrialConfig(
        "mnist", "cpu-emulate-tt", 256, optimization_level=2, weight_dtypes=(("*", "bfp_bf8"),)
    )
    backend = CPUEmulatedTTBackend(native_bf16=False)
    with torch.no_grad():
        compiled = backend.prepare(study.build_model(), config)(backend.to_device(inputs, config))
        eager_cfg = replace(config, optimization_level=0)
        eager = backend.prepare(study.build_model(), eager_cfg)(backend.to_device(inputs, config))
    assert torch.equal(compiled, compiled.bfloat16().float())
    assert (compiled.argmax(1) == eager.argmax(1)).double().mean().item() >= 0.99


def test_reference_key_covers_weights_eval_set_and_limit():
    study = get_study("mnist")
    inputs, labels = study.eval_data()
    inputs, labels = inputs[:100], labels[:100]
    model = study.build_model()
    key = reference.fingerprint("mnist", study, model, inputs, labels, 100)
    assert key == reference.fingerprint("mnist", study, study.build_model(), inputs, labels, 100)
    assert key != reference.fingerprint("mnist", study, model, inputs, labels, None)
    assert key != reference.fingerprint("mnist", study, model, inputs[:99], labels[:99], 100)
    assert key != reference.fingerprint("other", study, model, inputs, labels, 100)
    with torch.no_grad():
        model.fc2.weight[0, 0] += 1e-3
    assert key != reference.fingerprint("mnist", study, model, inputs, labels, 100)


def _rows(scores: dict[tuple[str, str], float]) -> list[Sensitivity]:
    rows = [Sensitivity(None, "bf16", 0, 1, 1, 0, 0)]
    for (w, d), flipped in scores.items():
        rows.append(Sensitivity(w, d, flipped, 1 - flipped, 1, 0, flipped))
    return rows


def test_seeded_maps_lower_least_sensitive_first():
    space = default_space(get_study("mnist"), get_backend("cpu-emulate-tt"))
    rows = _rows(
        {
            ("fc1.weight", "bfp_bf8"): 0.0,
            ("fc2.weight", "bfp_bf8"): 0.001,
            ("fc1.weight", "bfp_bf4"): 0.0002,
            ("fc2.weight", "bfp_bf4"): 0.0015,
        }
    )
    points = dtype_starting_points(space, rows)
    maps = [(s["dtype:fc1.weight"], s["dtype:fc2.weight"]) for s in points]
    # A ladder: all bf16, the least sensitive (fc1) lowered first, bfp_bf4 from all-bfp_bf8.
    assert maps == [
        ("bf16", "bf16"),
        ("bfp_bf8", "bf16"),
        ("bfp_bf8", "bfp_bf8"),
        ("bfp_bf4", "bfp_bf8"),
        ("bfp_bf4", "bfp_bf4"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mnist", "mnist_transformer"])
def test_sensitivity_and_emulated_study_end_to_end(cli, tmp_path, cache_dir, model):
    r = cli(
        "sensitivity", "--model", model, "--eval-limit", "500", "--format", "json", "-o", "sens.png"
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rows = data["rows"]
    assert data["rule"] == "host" and rows[0]["weight"] is None
    n_linear = sum(w.kind == "linear" for w in get_study(model).weights)
    # The baseline (hifi4), each lower math fidelity, each linear weight at each bfp format.
    assert len(rows) == 1 + 3 + 2 * n_linear
    assert [r["fidelity"] for r in rows[:4]] == ["hifi4", "hifi3", "hifi2", "lofi"]
    assert (tmp_path / "sens.png").read_bytes()[:4] == b"\x89PNG"
    # Cached by model and weights in the cache directory, with the compute path it used;
    # the storage keeps where that file is, for its readers (the HTML report).
    cached = {p: p.stat().st_mtime_ns for p in (cache_dir / "autotune").glob("*/*.json")}
    hits = {p: json.loads(p.read_text()) for p in cached if p.parent.name == "sensitivity"}
    path, entry = next(
        (p, d) for p, d in hits.items() if d["model"] == model and d["eval_limit"] == 500
    )
    assert [{k: row.get(k) for k in rows[0]} for row in entry["rows"]] == rows
    assert entry["environment"]["numerics"]["bf16_compute"] in (
        "bf16",
        "fp32, each op's output rounded to bf16",
    )
    record = optuna.load_study(
        study_name=f"{model}-sensitivity", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    assert read_sensitivity(record).path == str(path.resolve())
    # A new database does not pay again: nothing in the cache is written anew.
    r = cli("sensitivity", "--model", model, "--eval-limit", "500", "--storage", "sqlite:///b.db")
    assert r.returncode == 0 and "bfp_bf4" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in cached} == cached

    space = tmp_path / "fast.toml"
    space.write_text("batch_size = {min = 256, max = 256}\noptimization_level = [0]\n")
    r = cli(
        "study",
        "--model",
        model,
        "--emulate",
        "tt",
        "--trials",
        "4",
        "--space",
        str(space),
        "--measure-seconds",
        "0.2",
        "--eval-limit",
        "500",
        "--no-progress",
        "--stop-slower",
        "0",  # every seeded map measured, whatever else loads the machine
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(
        study_name=f"{model}-cpu-emulate-tt", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    # The first trials are the sensitivity-seeded maps: all bf16, then the least sensitive
    # dimension lowered to bfp_bf8.
    records = [TrialRecord.of(t) for t in trials]
    assert [r.starting_point for r in records] == [FROM_SENSITIVITY] * 4
    assert set(records[0].config["weight_dtypes"].values()) == {"bf16"}
    assert "bfp_bf8" in records[1].config["weight_dtypes"].values()
    assert all(r.status == "ok" for r in records)
    r = cli("export", "--study", f"{model}-cpu-emulate-tt", "--format", "tt-mixed-precision")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout).values()) <= {"bf16", "bfp_bf8", "bfp_bf4"}


@pytest.mark.slow
def test_a_failed_sensitivity_pass_does_not_sink_the_study(cli, tmp_path):
    """The pass crashes for real (SIGSEGV once a weight is lowered, see
    tests/fixtures/faulty_studies.py); the study runs its trials without those starting
    points and says so in one line."""
    space = tmp_path / "one.toml"
    space.write_text(
        "batch_size = {min = 64, max = 64}\noptimization_level = [0]\nchannels_last = [false]\n"
        "streams = [1]\n"
    )
    r = cli(
        "study",
        "--model",
        "tests.fixtures.faulty_studies:CRASH_ON_LOWERED_WEIGHT",
        "--emulate",
        "tt",
        "--study-name",
        "crashing-pass",
        "--trials",
        "2",
        "--space",
        str(space),
        "--measure-seconds",
        "0.2",
        "--eval-limit",
        "300",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "sensitivity" in line]
    assert said == [
        "autotune: sensitivity run failed (crash): trial process killed by SIGSEGV; "
        "the study goes on without sensitivity-ordered starting points"
    ], r.stderr
    trials = optuna.load_study(
        study_name="crashing-pass", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    ).get_trials()
    assert len(trials) == 2
    assert not [t for t in trials if TrialRecord.of(t).starting_point == FROM_SENSITIVITY]
