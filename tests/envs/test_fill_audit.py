"""quote-best through the fill audit on a hand-computed sequence (envs.fill_audit)."""

from __future__ import annotations

import pytest

from envs.fill_audit import audit_fills
from envs.queue import Latency, QueueModel
from tests.envs.test_queue import MS, S, frames

# bid 100 x 500 / ask 101 x 300 at t=0. At 1.5 s the ask moves to 102 and a bid of 50
# appears at 101. At 2.5 s a sell of 80 prints at 101 and the 101 bid is gone.
# A last quiet delta at 4 s ends the span.
DELTAS = [
    (S + 500 * MS, -1, 101, 0),
    (S + 500 * MS, -1, 102, 300),
    (S + 500 * MS, 1, 101, 50),
    (2 * S + 500 * MS, 1, 101, 0),
    (4 * S, -1, 103, 10),
]
TRADES = [(2 * S + 500 * MS, -1, 101, 80)]


def test_quote_best_follows_the_best_bid_and_counts_a_partial_fill() -> None:
    book, trades = frames(DELTAS, TRADES)
    rep = audit_fills(
        book, trades, model=QueueModel("risk_averse"), latency=Latency(1, 1), size=100, lot=1
    )
    # 1 s: buy at 100 (500 ahead). 2 s: best bid 101: cancel, buy at 101 (50 ahead).
    # 2.5 s: 80 sold at 101: 30 for us. 3 s: best bid 100 again: cancel the rest, buy at 100.
    assert (rep["orders"], rep["cancels"]) == (3, 2)
    assert (rep["fills"], rep["seconds_with_fill"], rep["filled_contracts"]) == (1, 1, 30)
    assert rep["seconds"] == 4 and rep["rejected_post_only"] == 0


def test_quote_best_under_trade_through_gets_no_fill_from_trades_at_the_bid() -> None:
    book, trades = frames(DELTAS, TRADES)
    rep = audit_fills(
        book, trades, model=QueueModel("trade_through"), latency=Latency(), size=100, lot=1
    )
    assert rep["fills"] == 0


def test_quote_best_size_is_rounded_to_the_lot_and_refused_below_it() -> None:
    book, trades = frames(DELTAS, TRADES)
    rep = audit_fills(book, trades, model=QueueModel("touch"), latency=Latency(), size=25, lot=10)
    assert rep["size"] == 20
    with pytest.raises(ValueError, match="below one lot"):
        audit_fills(book, trades, model=QueueModel("touch"), latency=Latency(), size=5, lot=10)
