"""TT numerics emulated on the CPU: layer grouping, sensitivity, seeded dtype maps, and
`--emulate tt` / `autotune sensitivity` end to end on both real studies."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from autotune.backends import get_backend
from autotune.backends._torch_dtypes import resolve_weight_map
from autotune.numerics import round_bfp
from autotune.sensitivity import Sensitivity, seeded_dtype_params
from search_spaces import MAX_WEIGHT_PARAMS, default_space, group_weights
from studies import get_study


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


def test_emulated_backend_rounds_linear_weights_exactly():
    study = get_study("mnist")
    backend = get_backend("cpu-emulate-tt")
    fp32 = study.build_model()
    config = default_space(study, backend).config_from(
        {
            "log2_batch_size": 0,
            "batch_size": 1,
            "optimization_level": 0,
            "activation_dtype": "bf16",
            "channels_last": False,
            "dtype:fc1.weight": "bfp_bf4",
            "dtype:fc2.weight": "bfp_bf8",
        }
    )
    model = backend.prepare(study.build_model(), config)
    assert torch.equal(model.fc1.weight.float(), round_bfp(fp32.fc1.weight.detach(), "bfp_bf4"))
    assert torch.equal(model.fc2.weight.float(), round_bfp(fp32.fc2.weight.detach(), "bfp_bf8"))
    assert torch.equal(model.conv1.weight, fp32.conv1.weight.detach().to(torch.bfloat16))


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
    seeds = seeded_dtype_params(space, rows)
    maps = [(s["dtype:fc1.weight"], s["dtype:fc2.weight"]) for s in seeds]
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
def test_sensitivity_and_emulated_study_end_to_end(cli, tmp_path, model):
    r = cli(
        "sensitivity", "--model", model, "--eval-limit", "500", "--format", "json", "-o", "sens.png"
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rows = data["rows"]
    assert data["rule"] == "host" and rows[0]["weight"] is None
    n_linear = sum(w.kind == "linear" for w in get_study(model).weights)
    assert len(rows) == 1 + 2 * n_linear
    assert (tmp_path / "sens.png").read_bytes()[:4] == b"\x89PNG"
    # Cached in the storage: a second call does not recompute (and is fast).
    record = optuna.load_study(
        study_name=f"{model}-sensitivity", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    assert record.user_attrs["autotune_sensitivity"]["rows"] == rows
    r = cli("sensitivity", "--model", model, "--eval-limit", "500")
    assert r.returncode == 0 and "bfp_bf4" in r.stdout

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
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(
        study_name=f"{model}-cpu-emulate-tt", storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    # The first trials are the sensitivity-seeded maps: all bf16, then the least sensitive
    # dimension lowered to bfp_bf8.
    assert [t.user_attrs.get("seeded") for t in trials] == ["sensitivity"] * 4
    assert set(trials[0].user_attrs["config"]["weight_dtypes"].values()) == {"bf16"}
    assert "bfp_bf8" in trials[1].user_attrs["config"]["weight_dtypes"].values()
    assert all(t.user_attrs["status"] == "ok" for t in trials)
    r = cli("export", "--study", f"{model}-cpu-emulate-tt", "--format", "tt-mixed-precision")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout).values()) <= {"bf16", "bfp_bf8", "bfp_bf4"}
