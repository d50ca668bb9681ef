from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import NS_PER_HOUR
from core.fees import FeeConfig
from core.instrument import InstrumentSpec
from envs.position import (
    LONG,
    SHORT,
    ExposureError,
    StateLimits,
    apply_fill,
    apply_funding,
    can_fill,
    management_state,
    open_account,
    unrealized_pnl,
    unrealized_return,
)

XBT = InstrumentSpec()  # inverse, tick 0.5; the default dated fee at T0: maker -0.00025
LINEAR = InstrumentSpec(symbol="XBTUSDT", is_inverse=False, settle_currency="USDt")
LINEAR_FEES = FeeConfig.constant(0.0002, 0.0005)
T0 = 1_626_912_000_000_000_000  # 2021-07-22: BitMEX maker -0.025 %, taker 0.075 %


def test_inverse_long_round_trip_matches_hand_computation() -> None:
    pos = open_account(1.0, T0)
    # 80,000 ticks = 40,000 USD; 10% of 1 XBT = 4,000 USD contracts; maker rebate 0.025% of 0.1 XBT
    pos, closed = apply_fill(pos, LONG, 80_000, T0 + 1, XBT, 0.1, 1.0)
    assert closed == ()
    assert pos.longs[0].contracts == pytest.approx(4000.0)
    assert pos.balance == pytest.approx(1.0 + 0.000025)
    assert pos.fees == pytest.approx(-0.000025)
    # exit at 40,400 USD: pnl = 4000 * (1/40000 - 1/40400) = 0.00099009901 XBT
    pos, closed = apply_fill(pos, SHORT, 80_800, T0 + 2, XBT, 0.1, 1.0)
    pnl = 4000 * (1 / 40_000 - 1 / 40_400)
    exit_fee = -0.00025 * 4000 / 40_400
    assert len(closed) == 1
    assert closed[0].pnl == pytest.approx(pnl, rel=1e-12)
    assert pnl == pytest.approx(0.000990099, abs=1e-9)
    assert closed[0].fees == pytest.approx(-0.000025 + exit_fee, rel=1e-12)
    assert closed[0].entry_price_ticks == 80_000 and closed[0].exit_price_ticks == 80_800
    assert pos.side == 0 and pos.exposure == 0
    assert pos.balance == pytest.approx(1.0 + 0.000025 + pnl - exit_fee, rel=1e-12)
    assert pos.realized_pnl == pytest.approx(pnl)
    assert pos.flat_since_ns == T0 + 2


def test_inverse_short_loses_when_price_rises() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, SHORT, 80_000, T0, XBT, 0.1, 1.0)
    assert unrealized_pnl(pos, 80_800, XBT) == pytest.approx(-4000 * (1 / 40_000 - 1 / 40_400))
    assert unrealized_return(pos, 80_800, XBT) == pytest.approx(-(1 - 40_000 / 40_400))


def test_linear_long_pnl_is_contracts_times_price_move() -> None:
    pos = open_account(1000.0, T0)  # 1000 USDT
    pos, _ = apply_fill(pos, LONG, 80_000, T0, LINEAR, 0.1, 1.0, fees=LINEAR_FEES)
    assert pos.longs[0].contracts == pytest.approx(100 / 40_000)
    assert pos.fees == pytest.approx(0.0002 * 100)  # fee paid on 100 USDT notional
    pos, closed = apply_fill(pos, SHORT, 80_800, T0 + 1, LINEAR, 0.1, 1.0, fees=LINEAR_FEES)
    assert closed[0].pnl == pytest.approx(0.0025 * 400)
    assert closed[0].fees == pytest.approx(0.0002 * 100 + 0.0002 * 0.0025 * 40_400)


def test_opposite_fill_reduces_oldest_lot_first() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, LONG, 80_000, T0, XBT, 0.1, 1.0)
    pos, _ = apply_fill(pos, LONG, 80_400, T0 + 5, XBT, 0.1, 1.0)
    pos, closed = apply_fill(pos, SHORT, 80_200, T0 + 9, XBT, 0.1, 1.0)
    assert [c.entry_price_ticks for c in closed] == [80_000]
    assert [lot.price_ticks for lot in pos.longs] == [80_400]
    assert pos.exposure == pytest.approx(0.1)
    assert pos.flat_since_ns == T0  # still holding: unchanged


def test_reducing_fill_larger_than_stack_closes_it_without_flipping() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, SHORT, 80_000, T0, XBT, 0.1, 1.0)
    pos, closed = apply_fill(pos, LONG, 80_000, T0 + 1, XBT, 0.3, 1.0)
    assert len(closed) == 1 and closed[0].stake == pytest.approx(0.1)
    assert pos.side == 0 and pos.longs == () and pos.shorts == ()


def test_partial_reduction_splits_a_lot_proportionally() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, LONG, 80_000, T0, XBT, 0.2, 1.0)
    pos, closed = apply_fill(pos, SHORT, 80_000, T0 + 1, XBT, 0.05, 1.0)
    assert closed[0].contracts == pytest.approx(2000.0)
    assert pos.longs[0].stake == pytest.approx(0.15)
    assert pos.longs[0].contracts == pytest.approx(6000.0)
    assert pos.longs[0].entry_fee == pytest.approx(-0.00025 * 0.2 * 0.75)


def test_exposure_cap_refuses_the_eleventh_stake() -> None:
    pos = open_account(1.0, T0)
    for i in range(10):
        pos, _ = apply_fill(pos, LONG, 80_000 + i, T0 + i, XBT, 0.1, 1.0)
    assert pos.exposure == pytest.approx(1.0)
    assert not can_fill(pos, LONG, 0.1, 1.0)
    assert can_fill(pos, SHORT, 0.1, 1.0)
    with pytest.raises(ExposureError):
        apply_fill(pos, LONG, 80_000, T0 + 11, XBT, 0.1, 1.0)


@pytest.mark.parametrize(
    ("side", "price", "stake"), [(0, 80_000, 0.1), (LONG, 0, 0.1), (LONG, 80_000, 0.0)]
)
def test_bad_fill_arguments_raise(side: int, price: int, stake: float) -> None:
    with pytest.raises(ValueError):
        apply_fill(open_account(1.0, T0), side, price, T0, XBT, stake, 1.0)


def test_open_account_rejects_non_positive_balance() -> None:
    with pytest.raises(ValueError):
        open_account(0.0, T0)


def test_funding_long_pays_positive_rate() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, LONG, 80_000, T0, XBT, 0.1, 1.0)
    before = pos.balance
    pos, paid = apply_funding(pos, 0.0001, 80_000, XBT)
    assert paid == pytest.approx(0.0001 * 0.1)
    assert pos.balance == pytest.approx(before - paid)
    flat, none = apply_funding(open_account(1.0, T0), 0.0001, 80_000, XBT)
    assert none == 0.0 and flat.balance == 1.0


def test_management_state_long_hand_computed() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, LONG, 80_000, T0, XBT, 0.1, 1.0)
    pos, _ = apply_fill(pos, LONG, 80_000, T0 + NS_PER_HOUR, XBT, 0.1, 1.0)
    now = T0 + 2 * NS_PER_HOUR
    s = management_state(pos, now, 80_800, XBT, True, False, StateLimits(max_exposure=0.5))
    assert s.shape == (7,)
    assert s[0] == 1.0 and s[1] == 0.0
    assert s[2] == pytest.approx(0.2 / 0.5)
    assert s[3] == pytest.approx(100 * (1 - 40_000 / 40_400))
    assert s[4] == pytest.approx(1.5)
    assert s[5] == pytest.approx(1.0)
    assert s[6] == 0.0


def test_management_state_flat_counts_hours_since_close_and_clips() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, SHORT, 80_000, T0, XBT, 0.1, 1.0)
    pos, _ = apply_fill(pos, LONG, 80_000, T0 + NS_PER_HOUR, XBT, 0.1, 1.0)
    s = management_state(pos, T0 + 4 * NS_PER_HOUR, 80_000, XBT, False, True, StateLimits())
    assert s.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0]
    s = management_state(
        pos, T0 + 100 * NS_PER_HOUR, 80_000, XBT, False, False, StateLimits(hours_clip=24.0)
    )
    assert s[6] == 24.0


def test_management_state_short_has_negative_size_and_clipped_pct() -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, SHORT, 80_000, T0, XBT, 0.3, 1.0)
    s = management_state(pos, T0, 240_000, XBT, False, False, StateLimits(pct_clip=50.0))
    assert s[2] == pytest.approx(-0.3)
    assert s[3] == -50.0  # price tripled: short lost 200 %, clipped


fills = st.lists(
    st.tuples(
        st.sampled_from([LONG, SHORT]),
        st.integers(70_000, 90_000),
        st.sampled_from([0.05, 0.1, 0.25]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(fills, st.floats(0.0, 0.001))
def test_fees_never_raise_the_balance_at_zero_rebate(
    seq: list[tuple[int, int, float]], fee: float
) -> None:
    fees = FeeConfig.constant(fee, fee)
    pos = open_account(1.0, T0)
    for i, (side, price, stake) in enumerate(seq):
        if not can_fill(pos, side, stake, 1.0):
            continue
        before = pos
        pos, closed = apply_fill(pos, side, price, T0 + i, XBT, stake, 1.0, fees=fees)
        step_pnl = sum(c.pnl for c in closed)
        assert pos.fees >= before.fees
        assert pos.balance <= before.balance + step_pnl + 1e-15
        # accounting identity: balance = start + realised pnl - fees
        assert math.isclose(
            pos.balance, 1.0 + pos.realized_pnl - pos.fees, rel_tol=0, abs_tol=1e-12
        )


@settings(max_examples=60, deadline=None)
@given(fills, st.sampled_from([0.1, 0.3, 1.0]))
def test_exposure_never_exceeds_its_cap_and_stacks_never_coexist(
    seq: list[tuple[int, int, float]], cap: float
) -> None:
    pos = open_account(1.0, T0)
    for i, (side, price, stake) in enumerate(seq):
        if can_fill(pos, side, stake, cap):
            pos, _ = apply_fill(pos, side, price, T0 + i, XBT, stake, cap)
        assert pos.exposure <= cap + 1e-9
        assert not (pos.longs and pos.shorts)


@settings(max_examples=40, deadline=None)
@given(st.integers(70_000, 90_000), st.sampled_from([LONG, SHORT]))
def test_round_trip_at_the_same_price_has_zero_pnl(price: int, side: int) -> None:
    pos = open_account(1.0, T0)
    pos, _ = apply_fill(pos, side, price, T0, XBT, 0.1, 1.0)
    assert unrealized_pnl(pos, price, XBT) == 0.0
    pos, closed = apply_fill(pos, -side, price, T0 + 1, XBT, 0.1, 1.0)
    assert closed[0].pnl == 0.0
    assert np.isclose(pos.balance, 1.0 - pos.fees)


@settings(max_examples=60, deadline=None)
@given(fills, st.integers(60_000, 100_000), st.booleans())
def test_summary_marking_equals_the_per_lot_sum(
    seq: list[tuple[int, int, float]], mark: int, inverse: bool
) -> None:
    from envs.position import lot_pnl, summarize

    inst = XBT if inverse else LINEAR
    pos = open_account(1.0, T0)
    for i, (side, price, stake) in enumerate(seq):
        if can_fill(pos, side, stake, 1.0):
            pos, _ = apply_fill(pos, side, price, T0 + i * NS_PER_HOUR, inst, stake, 1.0)
    px = mark * inst.tick_size
    direct = sum(
        lot_pnl(lot.side, lot.contracts, lot.price_ticks * inst.tick_size, px, inst)
        for lot in pos.lots
    )
    s = summarize(pos, inst)
    assert s.unrealized(px) == pytest.approx(direct, rel=1e-9, abs=1e-15)
    assert s.exposure == pytest.approx(pos.exposure)
    if pos.lots:
        ages = [(T0 + 10**18 - lot.ts_ns) * lot.stake for lot in pos.lots]
        mean_age = sum(ages) / pos.exposure
        assert T0 + 10**18 - s.mean_ts_ns == pytest.approx(mean_age, rel=1e-9)
