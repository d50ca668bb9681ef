"""Queue models, latency and post-only on hand-computed event sequences (envs.queue).

The book opens with a snapshot at t=0: bid 100 x 500, ask 101 x 300. Lot 1 unless said.
Times are ns; ts_recv = ts_event.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from core import schema
from envs.queue import (
    BUY,
    ExchangeReplay,
    Latency,
    QueueModel,
    prob_behind,
    queue_on_depth,
    round_to_lot,
)
from ingest.events import book_schema, trade_schema

MS = 1_000_000
S = 1_000_000_000


def frames(
    deltas: list[tuple[int, int, int, int]], trades: list[tuple[int, int, int, int]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """deltas (ts, side, price, size) after the opening snapshot; trades (ts, side, price,
    size) with side -1 a taker sell."""
    snap = [(0, 1, 100, 500, True), (0, -1, 101, 300, True)]
    rows = snap + [(t, s, p, q, False) for t, s, p, q in deltas]
    return _frame(rows, book_schema()), _frame(trades, trade_schema())


def _frame(rows: list[tuple[int, ...]], sch: pl.Schema) -> pl.DataFrame:
    """Rows (ts, side, price, size[, is_snapshot]); ts_recv = ts_event = ts."""
    cols = [c for c in sch.names() if c != schema.TS_RECV]
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    data[schema.TS_RECV] = data[schema.TS_EVENT]
    return pl.DataFrame(data).select(sch.names()).cast(dict(sch))  # type: ignore[arg-type]


def replay(
    deltas: list[tuple[int, int, int, int]],
    trades: list[tuple[int, int, int, int]],
    model: str,
    latency: Latency | None = None,
    lot: int = 1,
    power: float = 2.0,
) -> ExchangeReplay:
    book, tr = frames(deltas, trades)
    return ExchangeReplay(
        book, tr, model=QueueModel(model, power), latency=latency or Latency(), lot=lot
    )


def fills_of(ex: ExchangeReplay, t: int) -> list[tuple[int, int]]:
    return [(f.ts_ns, f.qty) for f in ex.run_until(t)]


@pytest.mark.parametrize("model", ["risk_averse", "power_prob"])
def test_queue_trades_at_price_consume_ahead_then_fill_partially(model: str) -> None:
    # join behind 500; a sell of 300 (the level then shows 200); a sell of 250 leaves 50
    # of it for us; a sell of 80 fills the last 50.
    ex = replay(
        deltas=[(2 * S, 1, 100, 200)],
        trades=[(2 * S, -1, 100, 300), (3 * S, -1, 100, 250), (4 * S, -1, 100, 80)],
        model=model,
    )
    ex.submit(1, BUY, 100, 100, sent_ns=S)
    assert fills_of(ex, S) == []
    assert ex.queue_ahead(1) == 500
    assert fills_of(ex, 2 * S) == []
    assert ex.queue_ahead(1) == 200  # the trade, not counted twice by the size change
    assert fills_of(ex, 3 * S) == [(3 * S, 50)]
    assert ex.orders[1].status == "live"
    assert fills_of(ex, 4 * S) == [(4 * S, 50)]
    assert ex.orders[1].status == "filled"
    assert ex.orders[1].filled == 100


def test_touch_fills_on_the_first_trade_at_its_price() -> None:
    ex = replay(deltas=[], trades=[(2 * S, -1, 100, 30), (3 * S, 1, 101, 500)], model="touch")
    ex.submit(1, BUY, 100, 100, sent_ns=S)
    assert fills_of(ex, 3 * S) == [(2 * S, 30)]  # a taker buy at the ask does not hit bids
    assert ex.orders[1].status == "live"


def test_trade_through_ignores_trades_at_its_price_and_fills_on_a_trade_through() -> None:
    ex = replay(
        deltas=[],
        trades=[(2 * S, -1, 100, 5000), (3 * S, -1, 99, 1)],
        model="trade_through",
    )
    ex.submit(1, BUY, 100, 100, sent_ns=S)
    assert fills_of(ex, 2 * S) == []
    assert fills_of(ex, 3 * S) == [(3 * S, 100)]  # the whole remainder: the level was taken


@pytest.mark.parametrize("model", ["touch", "trade_through", "risk_averse", "power_prob"])
def test_opposite_best_reaching_the_price_fills_the_whole_order(model: str) -> None:
    ex = replay(deltas=[(2 * S, -1, 101, 0), (2 * S, -1, 100, 40)], trades=[], model=model)
    ex.submit(1, BUY, 100, 100, sent_ns=S)
    assert fills_of(ex, 3 * S) == [(2 * S, 100)]


def test_cancellations_ahead_advance_power_prob_but_not_risk_averse() -> None:
    # join behind 500; 300 joins behind us (level 800); 400 is cancelled (level 400)
    deltas = [(2 * S, 1, 100, 800), (3 * S, 1, 100, 400)]
    risk = replay(deltas, [], "risk_averse")
    prob = replay(deltas, [], "power_prob", power=2.0)
    for ex in (risk, prob):
        ex.submit(1, BUY, 100, 100, sent_ns=S)
        ex.run_until(2 * S)
        assert ex.queue_ahead(1) == 500  # an increase goes behind
        ex.run_until(3 * S)
    # risk_averse: only because the level holds 400 in all, min(500, 400)
    assert risk.queue_ahead(1) == 400
    # power_prob, n=2: P(behind) = 300^2 / (300^2 + 500^2) = 9/34;
    # ahead = 500 - (25/34) 400 + min(300 - (9/34) 400, 0) = 500 - 10000/34
    assert prob.queue_ahead(1) == pytest.approx(500 - 10000 / 34)


def test_power_prob_does_not_count_a_decrease_explained_by_trades() -> None:
    ahead, traded = queue_on_depth(3, 400.0, 100.0, 800.0, 700.0, 2.0)
    assert (ahead, traded) == (400.0, 0.0)
    assert prob_behind(0.0, 0.0, 2.0) == 1.0
    assert prob_behind(1.0, 3.0, 1.0) == pytest.approx(0.75)


def test_latency_an_order_cannot_fill_before_it_arrives_and_joins_the_queue_then() -> None:
    ex = replay(
        deltas=[(S + 7 * MS, 1, 100, 200)],
        trades=[(S + 5 * MS, -1, 99, 10)],  # through our price, before we arrive
        model="risk_averse",
        latency=Latency(entry_ms=10, cancel_ms=10),
    )
    ex.submit(1, BUY, 100, 100, sent_ns=S)
    assert fills_of(ex, S + 9 * MS) == []
    assert ex.orders[1].status == "pending"
    ex.run_until(S + 10 * MS)
    assert ex.orders[1].status == "live"
    assert ex.queue_ahead(1) == 200  # the level as it stands on arrival


def test_a_cancel_in_flight_can_still_be_filled() -> None:
    ex = replay(
        deltas=[],
        trades=[(2 * S + 5 * MS, -1, 99, 10)],
        model="risk_averse",
        latency=Latency(entry_ms=0, cancel_ms=10),
    )
    ex.submit(1, BUY, 100, 100, sent_ns=S)
    ex.run_until(2 * S)
    ex.cancel(1, sent_ns=2 * S)
    assert fills_of(ex, 3 * S) == [(2 * S + 5 * MS, 100)]
    assert ex.orders[1].status == "filled"  # the cancel landed on a filled order


def test_a_cancel_that_lands_first_removes_the_order() -> None:
    ex = replay(
        deltas=[],
        trades=[(2 * S + 15 * MS, -1, 99, 10)],
        model="risk_averse",
        latency=Latency(entry_ms=0, cancel_ms=10),
    )
    ex.submit(1, BUY, 100, 100, sent_ns=S)
    ex.run_until(2 * S)
    ex.cancel(1, sent_ns=2 * S)
    assert fills_of(ex, 3 * S) == []
    assert ex.orders[1].status == "cancelled"


def test_post_only_order_that_would_cross_on_arrival_is_rejected() -> None:
    ex = replay(
        deltas=[(S + 5 * MS, -1, 100, 50)],  # the ask comes down to 100 while we travel
        trades=[],
        model="risk_averse",
        latency=Latency(entry_ms=10),
    )
    ex.submit(1, BUY, 101, 100, sent_ns=S - 20 * MS)  # at the ask: crosses
    ex.submit(2, BUY, 100, 100, sent_ns=S)  # sent below the ask, arrives at it
    assert fills_of(ex, 2 * S) == []
    assert ex.orders[1].status == "rejected"
    assert ex.orders[2].status == "rejected"
    assert ex.n_rejected == 2


def test_sizes_are_whole_lots_and_fills_round_down_to_the_lot() -> None:
    assert round_to_lot(250, 100) == 200
    with pytest.raises(ValueError, match="below one lot"):
        round_to_lot(50, 100)
    # lot 100: ahead 500, a sell of 550 leaves 50 for us: less than a lot, no fill;
    # a sell of 100 more makes 150: one lot fills
    ex = replay([], [(2 * S, -1, 100, 550), (3 * S, -1, 100, 100)], "risk_averse", lot=100)
    with pytest.raises(ValueError, match="multiple of the lot"):
        ex.submit(9, BUY, 100, 150, sent_ns=S)
    ex.submit(1, BUY, 100, 200, sent_ns=S)
    assert fills_of(ex, 2 * S) == []
    assert fills_of(ex, 3 * S) == [(3 * S, 100)]


def test_unknown_queue_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown queue model"):
        QueueModel("fifo")
    assert np.isfinite(QueueModel("power_prob", 3.0).power)
