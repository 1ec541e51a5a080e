"""The math-fidelity verdict: the cheapest fidelity that meets the accuracy constraint, by
the card's matmul rate, and which cheaper ones a card study need not try."""

from __future__ import annotations

import pytest

from autotune.backends.tt_options import FIDELITIES, PHASES, matmul_rate
from autotune.fidelity_verdict import Constraint, FidelityTrial, choose

PCC = Constraint("PCC vs fp32", max_metric_drop=4e-5)


def trial(n: int, fidelity: str, ok: bool, clean: bool = True, drop: float = 0.0) -> FidelityTrial:
    return FidelityTrial(n, fidelity, ok, clean, metric_drop=drop)


def test_matmul_rate_is_matrix_engine_md():
    # LoFi 4, HiFi2 2, HiFi3 1.33, HiFi4 1 TFLOPS (tt-metal matrix_engine.md, Wormhole 1 GHz).
    assert [round(matmul_rate(f), 2) for f in FIDELITIES] == [1.0, 1.33, 2.0, 4.0]
    assert set(PHASES) == set(FIDELITIES)


def test_the_cheapest_that_meets_it_and_the_failing_one_with_its_evidence():
    trials = [
        trial(0, "hifi4", True, drop=1.5e-5),
        trial(1, "hifi3", True, drop=1.5e-5),
        trial(2, "lofi", False, drop=9e-5),
        trial(3, "lofi", False, drop=6.7e-5),  # the closer failure is the evidence
        trial(4, "hifi2", True, drop=2.2e-5),
    ]
    v = choose(trials, PCC)
    assert v is not None
    assert v.cheapest == "hifi2"
    assert list(v.ruled_out) == ["lofi"] and v.ruled_out["lofi"].number == 3
    assert v.unmeasured == ()
    line = v.summary()
    assert "lofi fails the constraint (trial #3: PCC vs fp32 drop 6.7e-05 vs limit 4e-05)" in line
    assert "cheapest that meets it: hifi2 (card matmul rate 2x hifi4" in line
    assert v.card_space == ["hifi4", "hifi3", "hifi2"]
    d = v.to_dict()
    assert d["cheapest_feasible"] == "hifi2" and d["matmul_rate_vs_hifi4"] == 2.0
    assert d["card_space"] == {"math_fidelity": ["hifi4", "hifi3", "hifi2"]}


def test_ranked_by_the_card_not_by_order_of_trials_or_measured_throughput():
    # LoFi met it: it is the cheapest whatever else met it (no throughput is looked at).
    v = choose([trial(0, "lofi", True), trial(1, "hifi4", True)], PCC)
    assert v is not None and v.cheapest == "lofi" and not v.ruled_out
    assert "4x hifi4" in v.summary()


def test_a_fidelity_that_failed_only_with_lowered_weights_is_not_ruled_out():
    trials = [trial(0, "hifi4", True), trial(1, "lofi", False, clean=False)]
    v = choose(trials, PCC)
    assert v is not None and v.cheapest == "hifi4"
    assert not v.ruled_out and list(v.failed_lowered) == ["lofi"]
    assert "lofi" in v.card_space  # still worth a card trial
    assert "not ruled out" in v.summary()


def test_a_fidelity_that_met_it_once_is_not_ruled_out_by_another_trial():
    # lofi with bf16 weights failed at one batch... and met it at another: it met it.
    trials = [trial(0, "lofi", False), trial(1, "lofi", True), trial(2, "hifi4", True)]
    v = choose(trials, PCC)
    assert v is not None and v.cheapest == "lofi" and not v.ruled_out


def test_unmeasured_cheaper_fidelities_are_named():
    v = choose([trial(0, "hifi4", True)], PCC, offered=FIDELITIES)
    assert v is not None and v.cheapest == "hifi4"
    assert v.unmeasured == ("hifi3", "hifi2", "lofi")
    assert "hifi3, hifi2, lofi not measured" in v.summary()
    assert v.card_space == list(FIDELITIES)


def test_none_met_it():
    v = choose([trial(0, "hifi4", False), trial(1, "lofi", False)], PCC)
    assert v is not None and v.cheapest is None
    assert set(v.ruled_out) == {"hifi4", "lofi"}
    assert v.summary().endswith("no fidelity met the constraint")


def test_ttnn_default_is_judged_but_not_ranked():
    trials = [trial(0, "hifi4", True), trial(1, "ttnn_default", False)]
    v = choose(trials, PCC)
    assert v is not None and v.cheapest == "hifi4" and list(v.ruled_out) == ["ttnn_default"]
    v = choose([trial(0, "ttnn_default", True)], PCC)
    assert v is not None and v.cheapest is None and not v.ruled_out  # its cost is ttnn's


def test_agreement_evidence():
    c = Constraint("top-1 accuracy", max_metric_drop=0.5, min_agreement=99.995)
    t = FidelityTrial(7, "lofi", False, True, metric_drop=0.01, agreement=0.9999)
    v = choose([t, trial(8, "hifi4", True)], c)
    assert v is not None
    assert "agreement 99.99% vs at least 99.995%" in v.summary()


def test_no_fidelity_no_verdict():
    assert choose([], PCC) is None


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_any_single_fidelity_that_met_it_is_the_cheapest_among_those_that_did(fidelity):
    others = [f for f in FIDELITIES if matmul_rate(f) > matmul_rate(fidelity)]
    trials = [trial(0, fidelity, True), *(trial(i + 1, f, False) for i, f in enumerate(others))]
    v = choose(trials, PCC)
    assert v is not None and v.cheapest == fidelity
    assert set(v.ruled_out) == set(others)


def test_a_card_study_space_from_an_emulated_export(tmp_path):
    """`--space best.json` (an emulated study's export): the card study's space offers only
    the fidelities the verdict did not rule out; an export without a verdict is refused."""
    import json

    from autotune.backends import get_backend
    from search_spaces import SpaceError, default_space, load_space_file
    from studies import get_study

    v = choose([trial(0, "hifi4", True), trial(1, "hifi2", True), trial(2, "lofi", False)], PCC)
    assert v is not None
    export = tmp_path / "best.json"
    export.write_text(json.dumps({"schema": 5, "model": "mnist", "math_fidelity": v.to_dict()}))
    spec = load_space_file(export)
    assert spec == {"math_fidelity": ["hifi4", "hifi2"]}
    space = default_space(get_study("mnist"), get_backend("tt")).narrowed(spec)
    (dim,) = [d for d in space.dimensions if d.name == "math_fidelity"]
    assert dim.choices == ("hifi4", "hifi2")
    export.write_text(json.dumps({"schema": 5, "model": "mnist"}))
    with pytest.raises(SpaceError, match="no math-fidelity verdict"):
        load_space_file(export)
    export.write_text(json.dumps({"math_fidelity": ["lofi"]}))
    with pytest.raises(SpaceError, match="is an autotune export"):
        load_space_file(export)
