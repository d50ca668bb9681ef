"""Gates and the promote / reject / retest decision on hand-built slices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config.training import GatesConfig
from training.gates import (
    DEFINITIONS,
    GateResult,
    beats_baselines,
    beats_champion,
    candidate_gates,
    decide,
    drawdown_under_cap,
    dsr_above_min,
    no_single_slice_dependency,
    pass_majority_slices,
    passes_slice_gates,
    pbo_under_cap,
    seed_stability,
)
from training.metrics import SliceMetrics

G = GatesConfig()


def pbo(value: float | None, n_configs: int = 4, g: GatesConfig = G) -> GateResult:
    return pbo_under_cap(value, n_configs, g)


def sl(pnl: float, dd: float = 0.01, trades: int = 5, i: int = 0) -> SliceMetrics:
    return SliceMetrics(
        f"fold{i:02d}-test", "test", i, 100, trades, trades, 0, pnl, 0.0, pnl, dd, 1.0
    )


def test_pass_majority_needs_strictly_more_than_half() -> None:
    assert not pass_majority_slices([sl(0.01), sl(-0.01)], G).passed  # 0.5 is not > 0.5
    r = pass_majority_slices([sl(0.01), sl(0.02), sl(-0.01)], G)
    assert r.passed and r.value == pytest.approx(2 / 3) and r.threshold == 0.5
    assert not pass_majority_slices([sl(0.0), sl(0.0), sl(0.0)], G).passed  # flat is not a pass
    assert not pass_majority_slices([], G).passed


def test_drawdown_cap_is_inclusive_and_uses_the_worst_slice() -> None:
    assert drawdown_under_cap([sl(0.01, 0.05), sl(0.01, 0.01)], G).passed
    r = drawdown_under_cap([sl(0.01, 0.0501), sl(0.01, 0.01)], G)
    assert not r.passed and r.value == pytest.approx(0.0501)
    assert drawdown_under_cap([], G).value is None


def test_no_single_slice_dependency_drops_the_best_slice() -> None:
    r = no_single_slice_dependency([sl(0.10), sl(-0.01), sl(0.005)], G)
    assert not r.passed and r.value == pytest.approx(-0.005)
    r = no_single_slice_dependency([sl(0.10), sl(0.01), sl(-0.005)], G)
    assert r.passed and r.value == pytest.approx(0.005)
    assert not no_single_slice_dependency([sl(0.5)], G).passed


def test_seed_stability_share_at_or_above_threshold() -> None:
    assert seed_stability([True, False], G).passed
    assert not seed_stability([True, False, False], G).passed
    assert not seed_stability([], G).passed


def test_pbo_and_dsr_gates_strict_and_none_fails() -> None:
    assert pbo(0.2).passed
    assert not pbo(0.5).passed
    assert pbo(None).value is None and not pbo(None).passed
    assert dsr_above_min(0.96, G).passed and not dsr_above_min(0.95, G).passed  # strictly above
    assert not dsr_above_min(None, G).passed


def test_pbo_over_fewer_distinct_configs_than_the_minimum_is_not_enough_trials() -> None:
    # seeds of one config are one config: PBO 0.0 over them says nothing about selection
    r = pbo(0.0, n_configs=3)
    assert r.value is None and not r.passed and "not enough trials" in str(r.note)
    d = decide({"pbo_under_cap": r}, total_trades=100, n_slices=4, g=G)
    assert d.decision == "retest" and "not enough trials" in d.reasons[0]


def test_every_gate_has_a_definition_in_its_result() -> None:
    extra = (
        beats_baselines(np.array([0.02, 0.01, 0.03]), np.zeros(3), "flat", 0.05, G),
        beats_champion(0.05, 0.01, "m v1"),
    )
    gates = candidate_gates([sl(0.01, i=0), sl(0.02, i=1)], [True], pbo(0.1), 0.9, G, extra)
    assert list(gates) == list(DEFINITIONS)
    for name, r in gates.items():
        assert r.definition == DEFINITIONS[name] and len(r.definition) > 40
        assert {"passed", "value", "threshold", "definition"} <= set(r.as_dict())


def test_beats_baselines_needs_significance_and_price_pnl() -> None:
    ahead = np.array([0.02, 0.01, 0.03, 0.02])
    ok = beats_baselines(ahead, np.zeros(4), "flat", 0.05, G)
    assert ok.passed and ok.value is not None and ok.value < 0.05
    assert ok.detail["baseline"] == "flat" and ok.detail["n"] == 4
    # the same lead made of rebates alone (pnl without fees <= 0) fails
    assert not beats_baselines(ahead, np.zeros(4), "flat", 0.0, G).passed
    # a lead that noise explains fails: p not below the threshold
    noisy = beats_baselines(np.array([0.05, -0.04, 0.03, -0.03]), np.zeros(4), "flat", 0.01, G)
    assert not noisy.passed and noisy.value is not None and noisy.value > 0.05
    # equal to the baseline is not better
    assert not beats_baselines(ahead, ahead, "always_quote", 0.05, G).passed
    # one period cannot be tested: retest, not reject
    one = beats_baselines(ahead[:1], np.zeros(1), "flat", 0.05, G)
    assert one.value is None and "at least 2" in str(one.note)


def test_beats_champion_is_strict() -> None:
    assert beats_champion(0.02, 0.01, "m v1").passed
    assert not beats_champion(0.01, 0.01, "m v1").passed


def test_decide_promotes_when_all_gates_pass() -> None:
    slices = [sl(0.01, i=0), sl(0.02, i=1), sl(0.005, i=2)]
    gates = candidate_gates(slices, [True, True], pbo(0.1), 0.97, G)
    d = decide(gates, total_trades=25, n_slices=3, g=G)
    assert d.decision == "promote"


def test_decide_rejects_and_names_every_failed_gate() -> None:
    slices = [sl(0.10, i=0), sl(-0.01, i=1), sl(-0.02, dd=0.2, i=2)]
    gates = candidate_gates(slices, [False, False], pbo(0.7), 0.97, G)
    d = decide(gates, total_trades=25, n_slices=3, g=G)
    assert d.decision == "reject"
    text = " ".join(d.reasons)
    for name in (
        "pass_majority_slices",
        "drawdown_under_cap",
        "no_single_slice_dependency",
        "seed_stability",
        "pbo_under_cap",
    ):
        assert name in text
    assert "dsr_above_min" not in text


def test_decide_retests_on_too_few_trades_or_slices_or_missing_statistics() -> None:
    good = [sl(0.01, i=0), sl(0.02, i=1)]
    g = GatesConfig(min_trades=50)
    d = decide(candidate_gates(good, [True], pbo(0.1), 0.9, g), total_trades=10, n_slices=2, g=g)
    assert d.decision == "retest" and "too few trades" in d.reasons[0]
    one = [sl(0.01)]
    d = decide(candidate_gates(one, [True], pbo(0.1), 0.9, G), total_trades=10, n_slices=1, g=G)
    assert d.decision == "retest" and any("too few test slices" in r for r in d.reasons)
    d = decide(candidate_gates(good, [True], pbo(None), 0.9, G), total_trades=10, n_slices=2, g=G)
    assert d.decision == "retest" and any(
        "pbo_under_cap: too few test return periods" in r for r in d.reasons
    )


@settings(max_examples=60, deadline=None)
@given(
    pnls=st.lists(st.floats(-0.1, 0.1), min_size=2, max_size=8),
    bump=st.floats(0.0, 0.1),
)
def test_raising_every_slice_pnl_never_turns_a_pass_into_a_fail(
    pnls: list[float], bump: float
) -> None:
    before = [sl(p, i=i) for i, p in enumerate(pnls)]
    after = [sl(p + bump, i=i) for i, p in enumerate(pnls)]
    if passes_slice_gates(before, G):
        assert passes_slice_gates(after, G)


@settings(max_examples=60, deadline=None)
@given(pnls=st.lists(st.floats(-0.1, 0.1), min_size=2, max_size=8))
def test_stricter_thresholds_never_promote_more(pnls: list[float]) -> None:
    slices = [sl(p, i=i) for i, p in enumerate(pnls)]
    strict = GatesConfig(min_pass_fraction=0.75, max_drawdown=0.005)
    if passes_slice_gates(slices, strict):
        assert passes_slice_gates(slices, G)
