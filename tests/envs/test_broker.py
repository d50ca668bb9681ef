"""The broker's account (the live paper account): the env's order, fill and roll rules
(hand cases and properties over any action and bar sequence)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fees import DEFAULT_FEES
from core.instrument import XBTUSD
from envs.broker import BrokerAccount, BrokerRules
from envs.position import equity, open_account

S = 1_000_000_000


def _acct(**rules: object) -> BrokerAccount:
    rules_ = BrokerRules(**rules)  # type: ignore[arg-type]
    return BrokerAccount(rules_, XBTUSD, open_account(1.0, 0))


def test_buy_rests_at_bid_fills_on_a_trade_through_and_rolls_otherwise() -> None:
    a = _acct()
    a.act(1, 64000, 64001)
    assert a.bid_px == 64000 and a.long_order
    a.on_bar(1 * S, 64001, 64002, buy_hi=0, sell_lo=64000)  # a print AT the price: no trade-through
    assert a.position.side == 0 and a.bid_px == 64001  # rolled to the new best bid
    a.on_bar(2 * S, 64001, 64002, buy_hi=0, sell_lo=64000)  # a print below 64001: filled
    assert a.position.side == 1 and a.bid_px == 0 and a.fills == 1
    assert a.position.longs[0].price_ticks == 64001


def test_touch_model_fills_at_the_price_and_a_crossed_ask_fills_too() -> None:
    a = _acct(fill_model="touch")
    a.act(1, 64000, 64001)
    a.on_bar(1 * S, 63999, 64001, buy_hi=0, sell_lo=64000)
    assert a.position.side == 1
    b = _acct()
    b.act(2, 64000, 64001)
    b.on_bar(1 * S, 64001, 64002, buy_hi=0, sell_lo=0)  # the bid came up to the sell's price
    assert b.position.side == -1


def test_toggle_cancels_and_cap_refuses_new_orders() -> None:
    a = _acct(stake_fraction=0.5, max_exposure=0.5)
    a.act(1, 64000, 64001)
    a.act(1, 64000, 64001)
    assert not a.long_order
    a.act(1, 64000, 64001)
    a.on_bar(1 * S, 63990, 63995, 0, 0)  # ask crossed down: filled
    assert a.position.exposure == 0.5
    a.act(1, 63990, 63995)  # at the cap: the env ignores a new long order
    assert not a.long_order
    a.act(2, 63990, 63995)  # a sell reduces: allowed
    assert a.short_order


bars = st.tuples(st.integers(-3, 3), st.integers(1, 3), st.integers(0, 5), st.integers(0, 5))
# #17's fields of a bar: sizes at the best, volume at the previous best, through times (ms
# into the 1 s bar, 0 = none)
events = st.tuples(
    st.integers(0, 20_000), st.integers(0, 20_000), st.integers(0, 8_000), st.integers(0, 8_000),
    st.integers(0, 999), st.integers(0, 999),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0, 1, 2, 3]), bars, events), max_size=120),
    st.sampled_from(["trade_through", "touch", "risk_averse", "power_prob"]),
    st.sampled_from([(0.0, 0.0), (300.0, 200.0), (1500.0, 1200.0)]),
    st.sampled_from(["toggle", "target"]),
)
def test_any_sequence_keeps_exposure_capped_and_state_finite(
    steps: list, model: str, latency: tuple[float, float], mode: str
) -> None:
    """Any actions and bars, under every fill model, latency (one longer than a bar) and
    action mode: the cap holds, no buffer overflows, the state stays finite."""
    a = _acct(
        stake_fraction=0.25, max_exposure=0.5, fill_model=model, entry_latency_ms=latency[0],
        cancel_latency_ms=latency[1], action_mode=mode,
    )  # fmt: skip
    mid = 64000
    for k, (action, (drift, spread, hi_off, lo_off), ev) in enumerate(steps, start=1):
        bid_sz, ask_sz, sell_at, buy_at, sell_ms, buy_ms = ev
        bid, ask = mid - 1, mid - 1 + spread
        if mode == "toggle":
            action %= 3
        a.act(action, bid, ask, ts_ns=(k - 1) * S, bid_size=bid_sz, ask_size=ask_sz)
        mid += drift
        bid, ask = mid - 1, mid - 1 + spread
        t0 = (k - 1) * S
        a.on_bar(
            k * S,
            bid,
            ask,
            buy_hi=(ask + hi_off - 2) if hi_off else 0,
            sell_lo=(bid - lo_off + 2) if lo_off else 0,
            bid_size=bid_sz,
            ask_size=ask_sz,
            sell_at_vol=sell_at,
            buy_at_vol=buy_at,
            sell_thru_first=t0 + sell_ms * 1_000_000 if sell_ms else -1,
            sell_thru_last=t0 + 999_000_000 if sell_ms else -1,
            buy_thru_first=t0 + buy_ms * 1_000_000 if buy_ms else -1,
            buy_thru_last=t0 + 999_000_000 if buy_ms else -1,
        )
        assert a.position.exposure <= 0.5 + 1e-9
        assert not (a.position.longs and a.position.shorts)
        st_ = a.state(k * S, float(mid))
        assert st_.shape == (7,) and all(abs(v) < 1e6 for v in st_)
        assert -1.0 <= st_[2] <= 1.0
        assert equity(a.position, float(mid), XBTUSD) > 0
        side = a.position.side  # an opening fill is of the side held after it: whole lots
        assert all(f.contracts % 100 == 0 for f in a.last_fills if f.side == side)


def test_target_mode_places_wanted_sides_keeps_resting_ones_and_cancels_the_rest() -> None:
    a = _acct(action_mode="target")
    a.act(3, 64000, 64001)  # both wanted: both placed at the touch
    assert (a.bid_px, a.ask_px) == (64000, 64001)
    a.act(3, 63990, 64005)  # wanted again: the resting orders keep their prices
    assert (a.bid_px, a.ask_px) == (64000, 64001)
    a.act(1, 63990, 64005)  # bid only: the ask is cancelled, the bid stays
    assert (a.bid_px, a.ask_px) == (64000, 0)
    a.act(2, 63990, 64005)  # ask only: the bid goes, a new ask rests at today's ask
    assert (a.bid_px, a.ask_px) == (0, 64005)
    a.act(0, 63990, 64005)
    assert (a.bid_px, a.ask_px) == (0, 0)
    a.act(None, 63990, 64005)  # no decision (no model): nothing changes
    assert (a.bid_px, a.ask_px) == (0, 0)


def test_target_mode_respects_the_exposure_cap_like_the_env() -> None:
    a = _acct(action_mode="target", stake_fraction=0.5, max_exposure=0.5)
    a.act(1, 64000, 64001)
    a.on_bar(1 * S, 63990, 63995, 0, 0)  # ask crossed down: the bid filled
    assert a.position.exposure == 0.5 and not a.long_order
    a.act(3, 63990, 63995)  # at the cap: no new bid; the reducing ask is placed
    assert (a.bid_px, a.ask_px) == (0, 63995)


def test_paper_rules_read_the_models_action_mode() -> None:
    from core.config.env import EnvConfig

    env = EnvConfig(action_mode="target").model_dump(mode="json")
    assert BrokerRules.from_env_config(env).action_mode == "target"
    assert BrokerRules.from_env_config({"window": 4}).action_mode == "toggle"  # absent = toggle
    with pytest.raises(ValueError, match="action_mode 'flip'"):
        BrokerRules.from_env_config({"action_mode": "flip"})


def test_bar_at_reads_every_field_of_a_bar_row_back_bit_for_bit() -> None:
    import numpy as np

    from envs.broker import BAR_DTYPE, Bar, bar_at, bar_rows

    bars = np.zeros(2, BAR_DTYPE)
    bars[1] = (
        2**62, 64000, 64001, 64003, 63990, 64000.5, -0.00025, 5e-324, float("-inf"),
        7, 8, 9, 10, 11, 12, 13, -1,
    )  # fmt: skip
    got = bar_at(bar_rows(bars), 1)
    assert got == Bar(*bars[1].tolist())
    zero = Bar(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert got.taker == 5e-324 and bar_at(bar_rows(bars), 0) == zero
    with pytest.raises(ValueError, match="BAR_DTYPE"):
        bar_rows(np.zeros((2, 17), np.int64))


def test_a_bar_filling_both_sides_reports_the_buy_then_the_sell() -> None:
    a = _acct(stake_fraction=0.25, max_exposure=0.5)
    a.act(1, 64000, 64001)
    a.on_bar(1 * S, 63990, 63995, 0, 0)  # the ask crossed down: long 0.25
    a.act(1, 63990, 63995)
    a.act(2, 63990, 63995)  # a buy at 63990 and a sell at 63995 rest
    before = a.position
    a.on_bar(2 * S, 63980, 63985, buy_hi=64000, sell_lo=63970)  # both traded through
    buy, sell = a.last_fills
    assert (buy.side, buy.price_ticks, sell.side, sell.price_ticks) == (1, 63990, -1, 63995)
    after = a.position
    assert after.exposure == 0.25 and a.fills == 3  # opened a second lot, then closed the first
    assert buy.contracts == after.lots[-1].contracts
    assert sell.contracts == pytest.approx(before.lots[0].contracts)  # the oldest lot, whole
    assert buy.notional + sell.notional == pytest.approx(after.maker_volume - before.maker_volume)
    assert buy.fee_rate == sell.fee_rate == DEFAULT_FEES.rates_at(2 * S)[0]


def test_new_rules_keep_the_position_and_the_resting_orders() -> None:
    a = _acct(stake_fraction=0.5, max_exposure=0.5)
    a.act(1, 64000, 64001)
    a.on_bar(1 * S, 63990, 63995, 0, 0)  # filled: long 0.5, at the cap
    a.act(2, 63990, 63995)  # a sell rests
    before = a.position
    a.rules = BrokerRules(stake_fraction=0.1, max_exposure=1.0, action_mode="target")
    assert a.position == before and (a.bid_px, a.ask_px) == (0, 63995)
    a.act(1, 63990, 63995)  # target now: a bid only; 0.5 + 0.1 is within the new cap
    assert (a.bid_px, a.ask_px) == (63990, 0)


def test_a_position_set_from_outside_is_the_one_the_broker_runs_on() -> None:
    from envs.position import apply_fill

    a = _acct(stake_fraction=0.25, max_exposure=0.5)
    a.act(2, 64000, 64001)  # a sell rests
    pos, _ = apply_fill(a.position, 1, 64000, 1 * S, XBTUSD, 0.25, 0.5)  # an exchange fill
    pos, _ = apply_fill(pos, 1, 64000, 1 * S, XBTUSD, 0.25, 0.5)
    a.position = pos
    assert a.position == pos and a.ask_px == 64001
    a.act(1, 64000, 64001)  # at the cap: no buy rests
    assert a.bid_px == 0
    a.on_bar(2 * S, 64001, 64002, buy_hi=64002, sell_lo=0)  # the sell fills, reducing
    assert a.position.exposure == 0.25 and a.last_fills[0].side == -1


def test_an_action_the_mode_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="action must be one of 0..2, got 3"):
        _acct().act(3, 64000, 64001)
    with pytest.raises(ValueError, match="action must be one of 0..3, got 4"):
        _acct(action_mode="target").act(4, 64000, 64001)


@pytest.mark.parametrize(
    ("rules", "match"),
    [({"fill_model": "queue"}, "expected one of"), ({"entry_latency_ms": -1.0}, ">= 0")],
)
def test_an_unknown_fill_model_or_a_negative_latency_is_refused(rules: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BrokerRules(**rules)
