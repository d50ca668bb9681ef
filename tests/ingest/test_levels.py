"""levels_to_deltas: replaying its deltas through the book reproduces every top-k state."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from book.order_book import OrderBook
from ingest.levels import levels_to_deltas


@st.composite
def top_states(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    k = draw(st.integers(1, 5))
    n = draw(st.integers(1, 30))
    bp, bq, ap, aq = (np.zeros((n, k), dtype=np.int64) for _ in range(4))
    for r in range(n):
        mid = draw(st.integers(100, 110))
        bids = sorted(
            draw(st.sets(st.integers(mid - 12, mid), min_size=1, max_size=k)), reverse=True
        )
        asks = sorted(draw(st.sets(st.integers(mid + 1, mid + 12), min_size=1, max_size=k)))
        for i, p in enumerate(bids):
            bp[r, i], bq[r, i] = p, draw(st.integers(1, 9))
        for i, p in enumerate(asks):
            ap[r, i], aq[r, i] = p, draw(st.integers(1, 9))
    return bp, bq, ap, aq


@settings(max_examples=60, deadline=None)
@given(states=top_states())
def test_levels_to_deltas_replay_reproduces_each_state(states: tuple[np.ndarray, ...]) -> None:
    bp, bq, ap, aq = states
    n, k = bp.shape
    ts = np.arange(n, dtype=np.int64) * 10
    rows = levels_to_deltas(ts, ts + 1, bp, bq, ap, aq)
    book = OrderBook(strict=True)
    for r in range(n):
        msg = rows[rows[:, 1] == ts[r] + 1]
        assert bool(msg[:, 5].all()) == (r == 0) or len(msg) == 0
        if len(msg):
            book.apply_message(msg[:, 2], msg[:, 3], msg[:, 4], msg[:, 5].astype(bool))
        got_b, got_bq, got_a, got_aq = book.top(k)
        assert got_b.tolist() == bp[r].tolist() and got_bq.tolist() == bq[r].tolist()
        assert got_a.tolist() == ap[r].tolist() and got_aq.tolist() == aq[r].tolist()
