"""No message can kill the loop: `LiveSession.on_message` fuzzed with Hypothesis, in observe
and trade mode. Messages are BitMEX-shaped with hostile values ("abc" and 1e400 prices,
negative and float sizes, unknown ids, bad timestamps, wrong types) or any JSON at all;
after them, a fresh partial brings the session back to deciding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import NS_PER_S
from live.loop import LiveSession
from live.predictor import Predictor
from sim.fake_exchange import FakeBitmexRest
from tests.live.market import GARBAGE, StandInMarket
from tests.live.support import (
    KEY,
    SECRET,
    SMALL_SPEC,
    ClipStats,
    CyclePolicy,
    make_manager,
    trade_risk,
)

T0 = 1_626_912_000 * NS_PER_S

prices = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),  # JSON 1e400 arrives as inf
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(["abc", "1e400", "", "32000.5", "NaN", "-0"]),
    st.none(),
    st.booleans(),
)
sizes = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20), st.floats(), st.text(max_size=5)
)
ids = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=5), st.none())
timestamps = st.one_of(
    st.sampled_from(["2021-07-22T00:00:00.000Z", "2021-07-22T00:00:01.5Z", "not a time", ""]),
    st.text(max_size=30),
    st.integers(),
)
rows = st.dictionaries(
    st.sampled_from(["symbol", "id", "side", "size", "price", "timestamp", "state", "bids"]),
    st.one_of(prices, sizes, ids, timestamps, st.sampled_from(["XBTUSD", "Buy", "Sell", "Open"])),
    max_size=7,
).map(lambda r: {"symbol": "XBTUSD", **r})
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=10)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
bitmex_like = st.fixed_dictionaries(
    {
        "table": st.sampled_from(["orderBookL2", "trade", "instrument", "quote", "orderBook10"]),
        "action": st.sampled_from(["partial", "insert", "update", "delete", "bogus"]),
        "data": st.one_of(st.lists(rows, max_size=4), json_values),
    }
)
messages = st.one_of(bitmex_like, bitmex_like, st.sampled_from(GARBAGE), json_values)


def _session(orders: Any = None) -> tuple[LiveSession, StandInMarket]:
    s = LiveSession(
        SMALL_SPEC,
        ClipStats(),
        Predictor(CyclePolicy([1, 2, 0]), "fuzz@v1"),
        max_skew_s=None,
        stale_after_s=1e6,
        orders=orders,
        mode="trade" if orders is not None else "observe",
    )
    market = StandInMarket(11)
    for p in market.partials():
        s.on_message(T0, p)
    return s, market


def _feed(s: LiveSession, market: StandInMarket, t: int, bars: int) -> int:
    for _ in range(bars):
        for ts, msg in market.bar(t):
            s.on_message(ts, msg)
        t += NS_PER_S
        s.on_timer(t)
    return t


def _fuzz(s: LiveSession, market: StandInMarket, msgs: list[Any], state: dict[str, int]) -> None:
    t = state["t"]
    for i, msg in enumerate(msgs):
        s.on_message(t + i + 1, msg)  # raises nothing
    t = _feed(s, market, t, 1)
    if s.pending_resubscribe:
        s.pending_resubscribe = False
        for p in market.partials():
            s.on_message(t, p)
    state["t"] = t


def _settings(n: int) -> Any:
    return settings(
        max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )


def test_garbage_is_counted_and_dropped_and_the_book_recovers() -> None:
    s, market = _session()
    t = _feed(s, market, T0, 12)
    n = sum(s.actions.values())
    assert n > 0  # deciding before
    desyncs = s.desyncs
    for g in GARBAGE:
        s.on_message(t, g)
        if s.pending_resubscribe:  # a dropped book message is a desync: fresh partials
            s.pending_resubscribe = False
            for p in market.partials():
                s.on_message(t, p)
    assert sum(s.dropped.values()) == len(GARBAGE), s.dropped
    assert s.desyncs == desyncs + 3 and s.data_fault  # the three book messages
    _feed(s, market, t, 12)
    assert sum(s.actions.values()) > n and s.data_fault == ""


class Fuzzed:
    """A session kept across Hypothesis examples (state carries over, as in a long run)."""

    def __init__(self, orders: Any = None) -> None:
        self.s, self.market = _session(orders)
        self.state = {"t": _feed(self.s, self.market, T0, 12)}


@pytest.fixture(scope="module")
def observing() -> Fuzzed:
    return Fuzzed()


@_settings(100)
@given(batch=st.lists(messages, min_size=1, max_size=6))
def test_on_message_never_raises_in_observe_mode(observing: Fuzzed, batch: list[Any]) -> None:
    before = observing.s.messages
    _fuzz(observing.s, observing.market, batch, observing.state)
    assert observing.s.messages >= before + len(batch)


@pytest.fixture(scope="module")
def trading(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fuzzed, FakeBitmexRest]]:
    with FakeBitmexRest(KEY, SECRET) as fake:
        m = make_manager(
            fake.url,
            tmp_path_factory.mktemp("fuzz") / "journal.jsonl",
            risk=trade_risk(max_orders_per_minute=1000),
        )
        m.reconcile(T0)
        yield Fuzzed(m), fake
        m.shutdown(T0)
        m.journal.close()


@_settings(60)
@given(batch=st.lists(messages, min_size=1, max_size=6))
def test_on_message_never_raises_in_trade_mode(
    trading: tuple[Fuzzed, FakeBitmexRest], batch: list[Any]
) -> None:
    fz, fake = trading
    _fuzz(fz.s, fz.market, batch, fz.state)
    sides = [o["side"] for o in fake.open_orders()]
    assert sides.count("Buy") <= 1 and sides.count("Sell") <= 1  # never a duplicate
