"""Quotes come down when the data is bad: stale, skewed or desynced data, a failing strategy.
The session in trade mode against the fake BitMEX on 127.0.0.1, fed a seeded stand-in market;
the dead man's switch is re-armed only while feed and strategy are healthy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.clock import NS_PER_S
from live.loop import LiveSession
from live.predictor import Predictor
from sim.fake_exchange import FakeBitmexRest
from tests.live.market import StandInMarket
from tests.live.support import (
    KEY,
    SECRET,
    SMALL_SPEC,
    ClipStats,
    CyclePolicy,
    SimClock,
    make_manager,
    trade_risk,
)

T0 = 1_626_912_000 * NS_PER_S


class Rig:
    """A trading session, its order manager, the fake exchange and a stand-in market, all
    on one simulated clock (market time = REST time = the exchange's time)."""

    def __init__(self, fake: FakeBitmexRest, tmp_path: Path, policy: object) -> None:
        self.fake = fake
        self.sim = SimClock(T0 / NS_PER_S)
        fake.now_s = self.sim
        self.m = make_manager(
            fake.url,
            tmp_path / "journal.jsonl",
            risk=trade_risk(max_orders_per_minute=1000, stale_after_s=3),
            wall=self.sim,
            mono=self.sim,
            sleep=lambda s: None,
            dead_man_refresh_s=1.0,
        )
        self.s = LiveSession(
            SMALL_SPEC,
            ClipStats(),
            Predictor(policy, "t@v1"),  # type: ignore[arg-type]
            max_skew_s=5,
            stale_after_s=3,
            orders=self.m,
            mode="trade",
        )
        self.market = StandInMarket(3)
        self.t = T0
        self.sim.t = self.t / NS_PER_S
        self.m.reconcile(self.t)
        for p in self.market.partials():
            self.s.on_message(self.t, p)

    def deliver(self, ts: int, msg: object) -> None:
        self.sim.t = ts / NS_PER_S
        self.s.on_message(ts, msg)
        if self.s.pending_resubscribe:
            self.s.pending_resubscribe = False
            for p in self.market.partials():
                self.s.on_message(ts, p)
        self.s.on_timer(ts)

    def bars(self, n: int, silent: bool = False) -> None:
        for _ in range(n):
            if silent:
                for k in range(1, 5):
                    self.sim.t = (self.t + k * NS_PER_S // 5) / NS_PER_S
                    self.s.on_timer(self.t + k * NS_PER_S // 5)
            else:
                for ts, msg in self.market.bar(self.t):
                    self.deliver(ts, msg)
            self.t += NS_PER_S
            self.sim.t = self.t / NS_PER_S
            self.s.on_timer(self.t)

    def own_open(self) -> list[dict]:
        return [o for o in self.fake.open_orders() if o["clOrdID"].startswith("chappie-")]

    def quoting(self) -> None:
        """Bars until both own orders rest on the exchange."""
        for _ in range(30):
            self.bars(1)
            if len(self.own_open()) == 2:
                return
        raise AssertionError(f"no quotes after 30 bars: {self.s.health(self.t)}")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with FakeBitmexRest(KEY, SECRET) as fake:
        r = Rig(fake, tmp_path, CyclePolicy([1, 2] + [0] * 1000))
        yield r
        r.m.journal.close()


def test_stale_feed_takes_quotes_down_and_stops_the_dead_mans_refresh(rig: Rig) -> None:
    rig.quoting()
    armed = rig.fake.dead_man_calls
    rig.bars(2)
    assert rig.fake.dead_man_calls > armed  # healthy: re-armed every second
    rig.bars(4, silent=True)  # > stale_after_s without a message
    assert rig.s.health(rig.t).startswith("stale")
    assert rig.own_open() == [] and rig.s.quotes_pulled == 1
    armed = rig.fake.dead_man_calls
    rig.bars(10, silent=True)
    assert rig.fake.dead_man_calls == armed  # the exchange's switch may act
    rig.bars(15)  # data again: a full window of valid bars, then healthy and re-armed
    assert rig.s.health(rig.t) == "" and rig.fake.dead_man_calls > armed


def test_skewed_exchange_time_takes_quotes_down_until_a_sane_one(rig: Rig) -> None:
    rig.quoting()
    rig.market.skew_ns = 45 * NS_PER_S
    rig.bars(1)
    assert rig.s.health(rig.t).startswith("bad timestamps") and rig.own_open() == []
    armed = rig.fake.dead_man_calls
    rig.bars(8)
    assert rig.fake.dead_man_calls == armed and rig.s.data_fault
    rig.market.skew_ns = 0
    rig.bars(12)
    assert rig.s.health(rig.t) == "" and rig.fake.dead_man_calls > armed


def test_desync_takes_quotes_down_and_asks_for_fresh_partials(rig: Rig) -> None:
    rig.quoting()
    rig.sim.t = (rig.t + 1) / NS_PER_S
    rig.s.on_message(rig.t + 1, rig.market.desync())
    assert rig.s.pending_resubscribe and rig.s.data_fault.startswith("desync")
    rig.s.on_timer(rig.t + 1)
    assert rig.own_open() == []


class FailingPolicy(CyclePolicy):
    """Places both orders, then raises on every decision."""

    def predict(self, obs: np.ndarray) -> int:
        if self.calls >= 2:
            raise RuntimeError("policy blew up")
        return super().predict(obs)


def test_a_failing_strategy_is_counted_takes_quotes_down_and_never_stops_the_loop(
    tmp_path: Path,
) -> None:
    with FakeBitmexRest(KEY, SECRET) as fake:
        rig = Rig(fake, tmp_path, FailingPolicy([1, 2]))
        rig.quoting()
        rig.bars(1)
        assert rig.s.decision_errors >= 1 and rig.s.health(rig.t).startswith("decision failed")
        assert rig.own_open() == []
        armed = fake.dead_man_calls
        rig.bars(5)  # every decision fails: counted, no exception, no refresh
        assert rig.s.decision_errors >= 6 and fake.dead_man_calls == armed
        rig.m.journal.close()
