"""Risk limits hold for any action sequence (Hypothesis) and on hand-made cases."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from core.config.live import RiskConfig
from live.risk import (
    MINUTE_NS,
    OrderIntent,
    RiskState,
    check_cancel,
    check_new_order,
    update_equity,
)

S = 1_000_000_000
CFG = RiskConfig(
    max_position_contracts=300,
    max_order_contracts=100,
    max_orders_per_minute=5,
    price_band_bps=50.0,
    max_drawdown_xbt=0.01,
    stale_after_s=10.0,
)
MID = 64000.0  # ticks (32000 USD at 0.5)


def _check(intent: OrderIntent, state: RiskState, now: int = 100 * S, last: int = 99 * S):
    return check_new_order(intent, state, mid_ticks=MID, now_ns=now, last_data_ns=last, cfg=CFG)


def test_hand_cases_each_limit() -> None:
    ok = _check(OrderIntent(1, 64000, 100), RiskState())
    assert ok.allowed and ok.state.resting == ((1, 100),) and ok.state.accepted_ns == (100 * S,)
    assert "size" in _check(OrderIntent(1, 64000, 101), RiskState()).reason
    assert "size" in _check(OrderIntent(1, 64000, 0), RiskState()).reason
    # 50 bps of 64000 ticks = 320 ticks
    assert _check(OrderIntent(1, 64000 - 320, 10), RiskState()).allowed
    assert "outside" in _check(OrderIntent(1, 64000 - 321, 10), RiskState()).reason
    assert (
        "stale" in _check(OrderIntent(1, 64000, 10), RiskState(), now=100 * S, last=89 * S).reason
    )
    full = RiskState(position=250, resting=((1, 40),))
    assert "worst-case" in _check(OrderIntent(1, 64000, 20), full).reason
    assert _check(OrderIntent(-1, 64000, 100), full).allowed  # selling reduces
    busy = RiskState(accepted_ns=tuple(range(41 * S, 46 * S, S)))
    assert "last minute" in _check(OrderIntent(1, 64000, 1), busy).reason
    # trailing window (now - 60 s, now]: at 101 s the order of 41 s has left it
    assert _check(OrderIntent(1, 64000, 1), busy, now=41 * S + MINUTE_NS, last=100 * S).allowed


def test_drawdown_kill_switch_is_sticky_and_cancels_still_pass() -> None:
    st_ = update_equity(RiskState(), 1.0, CFG)
    st_ = update_equity(st_, 1.02, CFG)
    assert not st_.killed
    st_ = update_equity(st_, 1.0100001, CFG)
    assert not st_.killed
    st_ = update_equity(st_, 1.01, CFG)
    assert st_.killed
    st_ = update_equity(st_, 2.0, CFG)
    assert st_.killed
    assert "kill switch" in _check(OrderIntent(1, 64000, 1), st_).reason
    assert check_cancel().allowed


ops = st.one_of(
    st.tuples(
        st.just("order"), st.sampled_from([1, -1]), st.integers(-500, 500), st.integers(-5, 150)
    ),
    st.tuples(st.just("fill"), st.integers(0, 10)),
    st.tuples(st.just("cancel"), st.integers(0, 10)),
    st.tuples(st.just("wait"), st.integers(0, 30 * S)),
    st.tuples(st.just("equity"), st.floats(0.9, 1.1)),
    st.tuples(st.just("silence"), st.integers(0, 20 * S)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=80))
def test_limits_hold_for_any_action_sequence(seq: list) -> None:
    state = RiskState()
    now, last_data = 0, 0
    accepted: list[tuple[int, OrderIntent]] = []
    for op in seq:
        kind = op[0]
        if kind == "order":
            intent = OrderIntent(op[1], int(MID) + op[2], op[3])
            d = check_new_order(
                intent, state, mid_ticks=MID, now_ns=now, last_data_ns=last_data, cfg=CFG
            )
            if d.allowed:
                accepted.append((now, intent))
                assert 0 < intent.qty <= CFG.max_order_contracts
                assert abs(intent.price_ticks - MID) <= MID * CFG.price_band_bps / 1e4
                assert now - last_data <= CFG.stale_after_s * S
                assert not state.killed
            state = d.state
        elif kind == "fill" and state.resting:
            side, qty = state.resting[op[1] % len(state.resting)]
            rest = list(state.resting)
            rest.remove((side, qty))
            state = replace(state, position=state.position + side * qty, resting=tuple(rest))
        elif kind == "cancel" and state.resting:
            assert check_cancel().allowed
            rest = list(state.resting)
            rest.pop(op[1] % len(rest))
            state = replace(state, resting=tuple(rest))
        elif kind == "wait":
            now += op[1]
            last_data = now
        elif kind == "silence":
            now += op[1]
        elif kind == "equity":
            state = update_equity(state, op[1], CFG)
        # invariants after every step
        assert abs(state.position) <= CFG.max_position_contracts
        for side in (1, -1):
            assert (
                abs(state.position + side * sum(q for s, q in state.resting if s == side))
                <= CFG.max_position_contracts
            )
        in_last_minute = [t for t, _ in accepted if t > now - MINUTE_NS]
        assert len(in_last_minute) <= CFG.max_orders_per_minute
