"""The order state machine against the fake BitMEX on 127.0.0.1: unknown outcomes are
resolved by clOrdID before anything else is sent on that side, transient REST errors are
retried and never fatal, fatal conditions raise FatalTradingError and shutdown never does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from live.exchange import cl_ord_id, classify_error
from live.journal import read_journal, unresolved_intents
from live.orders import TRANSITIONS, FatalTradingError, OrderManager, OrderState
from sim.fake_exchange import FakeBitmexRest, FaultPlan
from tests.live.support import KEY, SECRET, SimClock, make_manager, trade_risk

S = 1_000_000_000
RISK = trade_risk(max_orders_per_minute=1000)


@pytest.fixture
def fake() -> Iterator[FakeBitmexRest]:
    with FakeBitmexRest(KEY, SECRET) as f:
        yield f


class WallClock:
    """Real unix time plus an offset a test can move forward (the client's api-expires)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _manager(fake: FakeBitmexRest, tmp_path: Path, clock: SimClock, **kw: Any) -> OrderManager:
    return make_manager(
        fake.url, tmp_path / "journal.jsonl", risk=RISK, mono=clock, sleep=lambda s: None, **kw
    )


@pytest.fixture
def started(fake: FakeBitmexRest, tmp_path: Path) -> Iterator[tuple[OrderManager, SimClock]]:
    """A reconciled manager on the fake and its simulated REST clock; journal closed after."""
    clock = SimClock()
    m = _manager(fake, tmp_path, clock)
    m.reconcile(0)
    yield m, clock
    m.journal.close()


def _buy(m: OrderManager, k: int) -> str:
    return m.on_decision(1, k * S, 64000, 64001, 64000.5, now_ns=k * S, last_data_ns=k * S)


def _own_open(fake: FakeBitmexRest) -> list[dict]:
    return [o for o in fake.open_orders() if o["clOrdID"].startswith("chappie-")]


def test_transition_table_is_closed_and_done_is_terminal() -> None:
    assert set(TRANSITIONS) == set(OrderState)
    assert TRANSITIONS[OrderState.DONE] == frozenset()
    assert all(OrderState.DONE in v for k, v in TRANSITIONS.items() if k is not OrderState.DONE)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError("t"), "unknown"),
        (ValueError("garbled body"), "unknown"),
    ],
)
def test_classify_error_calls_anything_unexplained_unknown(exc: Exception, kind: str) -> None:
    assert classify_error(exc) == kind


def test_503_after_commit_then_failing_lookups_keeps_the_side_busy_until_resolved(
    fake: FakeBitmexRest, started: tuple[OrderManager, SimClock], tmp_path: Path
) -> None:
    """The issue's case: POST commits but answers 503, the lookup fails too. The order is
    UNKNOWN (tracked), the next toggles on that side send nothing, and once a lookup
    succeeds it is LIVE: one order, never two."""
    m, clock = started
    fake.fail_creates_after_commit = [503]
    fake.faults = FaultPlan(lookup_fail=1.0)
    out = _buy(m, 1)
    assert out.startswith("pending") and m.slots[1].state is OrderState.UNKNOWN
    creates = sum(1 for r in fake.requests if r[:2] == ("POST", "/order"))
    for k in range(2, 6):  # toggles while unknown: nothing is sent on that side
        clock.t += 0.1
        assert _buy(m, k).startswith("pending")
    assert sum(1 for r in fake.requests if r[:2] == ("POST", "/order")) == creates == 1
    fake.faults = None
    clock.t += 60.0  # past the backoff
    m.service(10 * S)
    assert m.slots[1].state is OrderState.LIVE and len(_own_open(fake)) == 1
    assert m.stats.unknown_resolved == 1
    assert _buy(m, 11).startswith("cancelled")  # now the toggle acts: it cancels
    assert _own_open(fake) == []
    m.journal.close()
    assert unresolved_intents(read_journal(tmp_path / "journal.jsonl")) == []


def test_a_create_that_commits_late_is_not_given_up_before_its_request_expired(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    """Timeout, then lookups find nothing while the request is still queued at the
    exchange: "not found" is not final until the request's api-expires passed; the late
    commit is then found and tracked (no untracked order, no second one)."""
    clock = SimClock()
    m = _manager(fake, tmp_path, clock, timeout_s=0.1, expires_in_s=5)
    m.reconcile(0)
    fake.faults = FaultPlan(create_late_commit=1.0, delay_s=0.4)
    out = _buy(m, 1)
    fake.faults = None
    assert out.startswith("pending")
    o = m.slots[1]
    for _ in range(5):  # many lookups (simulated backoff) before the exchange commits
        clock.t += 10.0
        m.service(2 * S)
        if o.state is not OrderState.UNKNOWN:
            break
    assert o.state is OrderState.UNKNOWN and m.stats.given_up == 0  # not found, not given up
    time.sleep(0.5)  # the queued create commits (its api-expires has not passed)
    clock.t += 10.0
    m.service(3 * S)
    assert o.state is OrderState.LIVE and m.slots[1] is o
    assert [r["clOrdID"] for r in _own_open(fake)] == [o.cl_ord_id]
    assert fake.creates_committed == 1 and m.stats.given_up == 0
    m.journal.close()


def test_a_create_never_committed_is_given_up_after_expiry_and_a_late_twin_is_cancelled(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    clock, wall = SimClock(), WallClock()
    m = _manager(fake, tmp_path, clock, wall=wall)
    m.reconcile(0)
    fake.fail_creates_before_commit = [503]
    assert _buy(m, 1).startswith("pending")
    cid = m.slots[1].cl_ord_id
    for _ in range(4):  # not found, but its request could still be queued: not given up
        clock.t += 10.0
        m.service(2 * S)
    assert m.slots[1].state is OrderState.UNKNOWN and m.stats.given_up == 0
    wall.offset += 30.0  # its api-expires passed: it can never commit now
    for _ in range(4):
        clock.t += 10.0
        m.service(2 * S)
    assert 1 not in m.slots and m.stats.given_up == 1 and cid in m.lost
    assert _buy(m, 3).startswith("placed")  # the side is free again
    # an own order the manager does not track appears on the taken side: cancelled
    m.rest.create_post_only("XBTUSD", 1, 100, 31990.0, cl_ord_id("other", 9, 1))
    clock.t += 60.0
    m.service(4 * S)
    own = _own_open(fake)
    assert [r["clOrdID"] for r in own] == [m.slots[1].cl_ord_id]
    assert m.stats.strays_cancelled == 1
    m.journal.close()


def test_an_untracked_own_order_on_a_free_side_is_adopted(
    fake: FakeBitmexRest, started: tuple[OrderManager, SimClock]
) -> None:
    m, clock = started
    cid = cl_ord_id("late", 1, -1)
    m.rest.create_post_only("XBTUSD", -1, 100, 32010.0, cid)
    clock.t += 60.0
    m.service(1 * S)
    assert m.slots[-1].cl_ord_id == cid and m.slots[-1].state is OrderState.LIVE
    assert m.stats.adopted == 1


def test_cancel_whose_answer_is_lost_is_looked_up_and_done(
    fake: FakeBitmexRest, started: tuple[OrderManager, SimClock]
) -> None:
    m, clock = started
    assert _buy(m, 1).startswith("placed")
    fake.faults = FaultPlan(cancel_after_commit=1.0)
    out = _buy(m, 2)
    fake.faults = None
    assert out.startswith("cancelled") and "after a lookup" in out, out
    assert 1 not in m.slots and _own_open(fake) == []
    assert m.closed[-1].status == "Canceled"


def test_partial_fills_move_the_position_once(
    fake: FakeBitmexRest, started: tuple[OrderManager, SimClock]
) -> None:
    m, clock = started
    _buy(m, 1)
    cid = m.slots[1].cl_ord_id
    fake.fill(cid, 30)
    clock.t += 5.0
    m.service(2 * S)
    assert [(f.qty, f.side) for f in m.take_fills()] == [(30, 1)] and m.position == 30
    fake.fill(cid)
    clock.t += 5.0
    m.service(3 * S)
    assert [f.qty for f in m.take_fills()] == [70] and m.position == 100 and 1 not in m.slots
    clock.t += 60.0
    m.service(4 * S)  # idle position check: the exchange agrees
    assert m.position == 100 == fake.position_qty["XBTUSD"]


def test_transient_errors_in_poll_reconcile_and_dead_man_are_retried_never_fatal(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    clock = SimClock()
    m = _manager(fake, tmp_path, clock)
    fake.faults = FaultPlan(lookup_fail=1.0, dead_man_fail=1.0)
    assert m.reconcile(0).ok is False and m.needs_reconcile
    assert _buy(m, 1).startswith("refused: not reconciled")
    assert m.refresh_dead_man() is False
    for _ in range(5):
        clock.t += 2.0
        m.service(1 * S)
        m.refresh_dead_man()
    fake.faults = None
    clock.t += 10.0
    m.service(2 * S)
    assert not m.needs_reconcile
    assert m.refresh_dead_man() is True and fake.dead_man_timeout_ms == 60_000
    assert (
        m.stats.errors["reconcile orders: unknown"] >= 2
        and m.stats.errors["dead man: unknown"] >= 2
    )
    assert _buy(m, 3).startswith("placed")
    m.journal.close()


def test_failures_beyond_the_dead_mans_window_are_fatal_and_shutdown_never_raises(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    clock = SimClock()
    m = _manager(fake, tmp_path, clock)
    m.reconcile(0)
    _buy(m, 1)
    fake.faults = FaultPlan(lookup_fail=1.0, dead_man_fail=1.0)
    m.refresh_dead_man()  # the first failure starts the outage clock
    clock.t += 30.0
    m.service(1 * S)  # still inside the 60 s window: retried
    clock.t += 31.0
    with pytest.raises(FatalTradingError, match="dead man's window"):
        m.service(2 * S)
    fake.faults = None
    m.shutdown(3 * S)  # cancels what is left, never raises
    assert _own_open(fake) == []
    m.journal.close()


def test_refused_keys_are_fatal(fake: FakeBitmexRest, tmp_path: Path) -> None:
    m = _manager(fake, tmp_path, SimClock(), secret="wrong-secret")
    with pytest.raises(FatalTradingError, match="refused the keys"):
        m.reconcile(0)
    m.shutdown(0)  # never raises
    entries = read_journal(tmp_path / "journal.jsonl")
    assert entries[-1]["what"] == "shutdown"
    m.journal.close()


def _target(m: OrderManager, action: int, k: int, data_k: int | None = None) -> str:
    """A decision of a target-mode model on bar k (market data last seen at bar data_k)."""
    seen = (k if data_k is None else data_k) * S
    return m.on_decision(
        action, k * S, 64000, 64001, 64000.5, now_ns=k * S, last_data_ns=seen, action_mode="target"
    )


def _requests(fake: FakeBitmexRest, method: str) -> int:
    return sum(1 for r in fake.requests if r[:2] == (method, "/order"))


def test_target_mode_places_wanted_sides_once_and_cancels_the_unwanted(
    fake: FakeBitmexRest, started: tuple[OrderManager, SimClock], tmp_path: Path
) -> None:
    """Target mode on the fake exchange: both wanted -> both placed; the same target again
    sends nothing; bid only -> the ask is cancelled and the bid keeps its clOrdID; ask only
    -> the bid is cancelled and a new ask placed; none -> nothing of ours is left."""
    m, _clock = started
    out = _target(m, 3, 1)
    assert out.startswith("bid: placed") and "; ask: placed" in out, out
    assert sorted(o["side"] for o in _own_open(fake)) == ["Buy", "Sell"]
    bid_id = m.slots[1].cl_ord_id
    posts, deletes = _requests(fake, "POST"), _requests(fake, "DELETE")
    assert _target(m, 3, 2) == "none"  # what is wanted already rests: nothing is sent
    assert (_requests(fake, "POST"), _requests(fake, "DELETE")) == (posts, deletes)
    out = _target(m, 1, 3)
    assert out.startswith("ask: cancelled"), out
    assert [(o["side"], o["clOrdID"]) for o in _own_open(fake)] == [("Buy", bid_id)]
    out = _target(m, 2, 4)
    assert out.startswith("bid: cancelled") and "; ask: placed" in out, out
    assert [o["side"] for o in _own_open(fake)] == ["Sell"]
    assert m.slots[-1].cl_ord_id == cl_ord_id(m.session, 4 * S, -1)  # a fresh clOrdID
    assert _target(m, 0, 5).startswith("ask: cancelled")
    assert _own_open(fake) == [] and not m.slots
    assert _target(m, 0, 6) == "none"
    assert m.orders_sent == 3
    m.journal.close()
    assert unresolved_intents(read_journal(tmp_path / "journal.jsonl")) == []


def test_target_mode_leaves_a_side_in_doubt_to_its_lookup_then_acts(
    fake: FakeBitmexRest, started: tuple[OrderManager, SimClock]
) -> None:
    """A create answered 503 after it committed, lookups failing: whatever the target says
    about that side, nothing is sent on it; once a lookup finds the order LIVE, a target
    that does not want it cancels it. The other side is served meanwhile."""
    m, clock = started
    fake.fail_creates_after_commit = [503]
    fake.faults = FaultPlan(lookup_fail=1.0)
    assert _target(m, 1, 1).startswith("bid: pending")
    assert m.slots[1].state is OrderState.UNKNOWN
    for k, action in ((2, 0), (3, 1), (4, 3)):
        clock.t += 0.1
        out = _target(m, action, k)
        assert out.startswith("bid: pending"), out
    assert "ask: placed" in out  # target 3: the free side is placed
    assert _requests(fake, "POST") == 2 and _requests(fake, "DELETE") == 0
    fake.faults = None
    clock.t += 60.0  # past the backoff: this decision's lookup resolves the bid
    out = _target(m, 2, 10)
    assert out == f"bid: cancelled {m.closed[-1].cl_ord_id}", out
    assert [o["side"] for o in _own_open(fake)] == ["Sell"]
    assert m.stats.unknown_resolved == 1
    m.journal.close()


def test_target_mode_new_orders_pass_the_risk_checks_and_cancels_always_go_through(
    fake: FakeBitmexRest, started: tuple[OrderManager, SimClock], tmp_path: Path
) -> None:
    m, _clock = started
    assert _target(m, 1, 1).startswith("bid: placed")
    out = _target(m, 2, 700, data_k=1)  # data 699 s old (limit 600 s): no new order
    assert out.startswith("bid: cancelled") and out.endswith("ask: refused: stale market data")
    assert _own_open(fake) == [] and m.refusals == ["stale market data"]
    m.journal.close()
    refused = [
        e for e in read_journal(tmp_path / "journal.jsonl") if e.get("what") == "risk_refused"
    ]
    assert [e["side"] for e in refused] == [-1]
