"""Per-slice metrics: hand-computed curves and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import (
    SliceMetrics,
    aggregate_totals,
    annualised_sharpe,
    compute_slice_metrics,
    drawdown_curve,
    fees_at,
    max_drawdown,
    period_returns,
    pnl_plus_fees_at,
    sample_on_clock,
)

S = 1_000_000_000


def test_max_drawdown_hand_computed() -> None:
    # peak 1.2 then trough 0.9: 0.3 / 1.2 = 0.25; the later 1.1 -> 1.0 dip from 1.3 is smaller
    eq = np.array([1.0, 1.2, 0.9, 1.3, 1.0 * 1.3 * 0.9])
    assert max_drawdown(eq) == pytest.approx(0.25)
    np.testing.assert_allclose(drawdown_curve(eq), [0, 0, 0.25, 0, 0.1])


def test_max_drawdown_of_rising_curve_is_zero_and_rejects_ruin() -> None:
    assert max_drawdown(np.array([1.0, 1.1, 1.2])) == 0.0
    assert max_drawdown(np.array([])) == 0.0
    with pytest.raises(ValueError):
        max_drawdown(np.array([1.0, 0.0]))
    with pytest.raises(ValueError):
        max_drawdown(np.array([1.0, np.nan]))


def test_sample_on_clock_takes_last_value_at_or_before_each_point() -> None:
    ts = np.array([0, 1, 2, 5, 7, 9]) * S
    v = np.array([10.0, 11, 12, 15, 17, 19])
    # grid 0, 3, 6, 9 s -> values at ts <= point: 10, 12, 15, 19
    np.testing.assert_allclose(sample_on_clock(ts, v, 3 * S), [10, 12, 15, 19])
    with pytest.raises(ValueError):
        sample_on_clock(ts[::-1], v, S)
    with pytest.raises(ValueError):
        sample_on_clock(ts, v[:-1], S)


def test_period_returns_hand_computed() -> None:
    ts = np.array([0, 1, 2]) * 60 * S
    eq = np.array([1.0, 1.01, 0.999])
    np.testing.assert_allclose(period_returns(ts, eq, 60 * S), [0.01, 0.999 / 1.01 - 1])


def test_annualised_sharpe_hand_computed_and_undefined_cases() -> None:
    r = np.array([0.01, -0.005, 0.02])
    hand = r.mean() / r.std(ddof=1) * math.sqrt(252)
    assert annualised_sharpe(r, 252) == pytest.approx(hand)
    assert annualised_sharpe(np.array([0.01]), 252) == 0.0
    assert annualised_sharpe(np.array([0.01, 0.01]), 252) == 0.0  # zero variance: undefined


def test_compute_slice_metrics_hand_computed() -> None:
    ts = np.arange(5) * 30 * S
    eq = np.array([2.0, 2.02, 1.98, 2.0, 2.04])
    m = compute_slice_metrics(
        slice_id="fold00-test",
        kind="test",
        fold=0,
        ts_ns=ts,
        equity=eq,
        pnl_without_fees=0.05,
        fees=-0.01,
        trade_pnls=np.array([0.03, -0.01, 0.0, 0.02]),
        return_period_ns=60 * S,
        periods_per_year=525_600,
    )
    assert m.steps == 4 and m.trades == 4 and m.wins == 2 and m.losses == 1
    assert m.pnl == pytest.approx(0.025) and m.fees == pytest.approx(-0.005)
    assert m.pnl_plus_fees == pytest.approx(0.02)
    assert m.max_drawdown == pytest.approx(0.04 / 2.02)
    r = np.array([1.98 / 2.0 - 1, 2.04 / 1.98 - 1])  # equity at 0, 60, 120 s
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(525_600))
    d = m.as_dict()
    assert d["slice_id"] == "fold00-test" and d["fold"] == 0


def test_compute_slice_metrics_rejects_bad_input() -> None:
    kw = dict(
        slice_id="x",
        kind="test",
        fold=None,
        pnl_without_fees=0.0,
        fees=0.0,
        trade_pnls=np.array([]),
        return_period_ns=S,
        periods_per_year=1.0,
    )
    with pytest.raises(ValueError, match="shape"):
        compute_slice_metrics(ts_ns=np.arange(3), equity=np.ones(2), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        compute_slice_metrics(ts_ns=np.arange(0), equity=np.ones(0), **kw)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-0.05, 0.05), min_size=1, max_size=200))
def test_drawdown_is_a_fraction_and_zero_for_monotone_curves(steps: list[float]) -> None:
    eq = np.cumprod(1.0 + np.array([0.0, *steps]))
    dd = max_drawdown(eq)
    assert 0.0 <= dd < 1.0
    assert max_drawdown(np.maximum.accumulate(eq)) == 0.0


def test_aggregate_totals_sums_and_takes_worst_drawdown() -> None:
    ts = np.arange(3) * S
    ms = [
        compute_slice_metrics(
            slice_id=f"s{i}",
            kind="test",
            fold=i,
            ts_ns=ts,
            equity=eq,
            pnl_without_fees=p,
            fees=f,
            trade_pnls=np.ones(i + 1),
            return_period_ns=S,
            periods_per_year=1.0,
        )
        for i, (eq, p, f) in enumerate(
            [
                (np.array([1.0, 0.9, 1.0]), 0.02, -0.01),
                (np.array([1.0, 1.1, 1.0]), -0.01, 0.002),
            ]
        )
    ]
    tot = aggregate_totals(ms)
    assert tot["trades"] == 3
    assert tot["pnl"] == pytest.approx(0.01) and tot["fees"] == pytest.approx(-0.008)
    assert tot["pnl_plus_fees"] == pytest.approx(0.002)
    assert tot["max_drawdown"] == pytest.approx(0.1)


def _with_fills(**kw: float) -> SliceMetrics:
    return compute_slice_metrics(
        slice_id="s",
        kind="test",
        fold=0,
        ts_ns=np.arange(3) * S,
        equity=np.array([2.0, 2.01, 1.99]),
        pnl_without_fees=-0.008,
        fees=-0.002,
        trade_pnls=np.array([-0.01]),
        return_period_ns=S,
        periods_per_year=1.0,
        **kw,
    )


def test_fill_volumes_are_fractions_of_equity_and_rates_are_volume_weighted() -> None:
    # 8 XBT of maker fills paid 0.0016, 0.5 XBT of taker fills paid 0.0004, on 2 XBT
    m = _with_fills(
        maker_volume=8.0, taker_volume=0.5, maker_fees_paid=0.0016, taker_fees_paid=0.0004
    )
    assert m.maker_volume == pytest.approx(4.0) and m.taker_volume == pytest.approx(0.25)
    assert m.maker_fee == pytest.approx(0.0002) and m.taker_fee == pytest.approx(0.0008)
    # re-scoring at the charged rates gives back the slice's fees; at another fee, the
    # same fills: a -2.5 bp rebate earns 4 * 0.00025 and the taker side pays 0.25 * 0.00075
    assert fees_at(m, m.maker_fee, m.taker_fee) == pytest.approx(m.fees)
    assert fees_at(m, -0.00025, 0.00075) == pytest.approx(4 * 0.00025 - 0.25 * 0.00075)
    assert pnl_plus_fees_at(m, 0.0, 0.0) == pytest.approx(m.pnl)
    none = _with_fills()
    assert (none.maker_volume, none.taker_volume, none.maker_fee, none.taker_fee) == (
        0.0,
        0.0,
        None,
        None,
    )
    with pytest.raises(ValueError, match="volumes"):
        _with_fills(maker_volume=-1.0)


def test_slice_metrics_round_trip_through_as_dict_and_json() -> None:
    import json

    m = _with_fills(maker_volume=8.0, maker_fees_paid=0.0016)
    assert SliceMetrics(**json.loads(json.dumps(m.as_dict()))) == m
    old = {k: v for k, v in m.as_dict().items() if "maker" not in k and "taker" not in k}
    assert SliceMetrics(**old).maker_fee is None  # a results file written before volumes


def test_a_ruined_account_is_a_full_drawdown_not_a_crash() -> None:
    """An equity path that reaches 0 (or below) gives max drawdown 1 and finite metrics:
    the gates reject it; the nightly must not fail on it."""
    from training.metrics import compute_slice_metrics

    ts = np.arange(6, dtype=np.int64) * 60 * 1_000_000_000
    eq = np.array([1.0, 0.8, 0.3, -0.1, 0.2, 0.1])
    m = compute_slice_metrics(
        slice_id="s",
        kind="test",
        fold=0,
        ts_ns=ts,
        equity=eq,
        pnl_without_fees=-0.9,
        fees=-0.1,
        trade_pnls=np.array([-1.0]),
        return_period_ns=60 * 1_000_000_000,
        periods_per_year=525_600.0,
    )
    assert m.max_drawdown == 1.0 and math.isfinite(m.sharpe)
    assert m.pnl_plus_fees == pytest.approx(-1.0)
