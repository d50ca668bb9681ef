"""Gates and the promote / reject / retest decision on hand-built slices."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config.training import GatesConfig
from training.gates import (
    DEFINITIONS,
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
    assert pbo_under_cap(0.2, G).passed
    assert not pbo_under_cap(0.5, G).passed
    assert pbo_under_cap(None, G).value is None and not pbo_under_cap(None, G).passed
    assert dsr_above_min(0.96, G).passed and not dsr_above_min(0.95, G).passed  # strictly above
    assert not dsr_above_min(None, G).passed


def test_every_gate_has_a_definition_in_its_result() -> None:
    gates = candidate_gates([sl(0.01, i=0), sl(0.02, i=1)], [True], 0.1, 0.9, G)
    assert list(gates) == list(DEFINITIONS)
    for name, r in gates.items():
        assert r.definition == DEFINITIONS[name] and len(r.definition) > 40
        assert set(r.as_dict()) == {"passed", "value", "threshold", "definition"}


def test_decide_promotes_when_all_gates_pass() -> None:
    slices = [sl(0.01, i=0), sl(0.02, i=1), sl(0.005, i=2)]
    gates = candidate_gates(slices, [True, True], 0.1, 0.97, G)
    d = decide(gates, total_trades=25, n_slices=3, g=G)
    assert d.decision == "promote"


def test_decide_rejects_and_names_every_failed_gate() -> None:
    slices = [sl(0.10, i=0), sl(-0.01, i=1), sl(-0.02, dd=0.2, i=2)]
    gates = candidate_gates(slices, [False, False], 0.7, 0.97, G)
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
    d = decide(candidate_gates(good, [True], 0.1, 0.9, g), total_trades=10, n_slices=2, g=g)
    assert d.decision == "retest" and "too few trades" in d.reasons[0]
    one = [sl(0.01)]
    d = decide(candidate_gates(one, [True], 0.1, 0.9, G), total_trades=10, n_slices=1, g=G)
    assert d.decision == "retest" and any("too few test slices" in r for r in d.reasons)
    d = decide(candidate_gates(good, [True], None, 0.9, G), total_trades=10, n_slices=2, g=G)
    assert d.decision == "retest" and any(
        "pbo_under_cap could not be computed" in r for r in d.reasons
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
