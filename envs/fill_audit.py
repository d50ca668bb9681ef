"""The fill audit: the reference quoting policy ``quote-best`` through `envs.queue`. Pure.

``quote-best``: at each whole second T of the clock, looking at the book as received
by T (book deltas with ``ts_recv <= T``, through the one book `features.book`): if no own
buy order rests, send a post-only buy of `size` contracts at the best bid; if one rests
at a price other than the best bid, cancel it and send a new one at the best bid;
otherwise leave it (it keeps its queue position). An order still in flight counts as
resting. Seconds whose received book has no two-sided, uncrossed, in-sync state are
skipped. The exchange side (`envs.queue.ExchangeReplay`) replays the same events in
exchange time with the chosen queue model and latency; fills are known to the policy at
once (no response latency), as hftbacktest's with a zero response latency.

The report counts fills (every partial execution is one), the seconds (T - 1 s, T]
holding at least one fill, and the contracts filled: the numbers `bench/bench_fills.py`
compares with hftbacktest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from book.order_book import ST_DESYNC, new_book, new_state, replay_kernel
from core import schema
from core.clock import NS_PER_S
from envs.queue import BUY, ExchangeReplay, Latency, QueueModel, best_price, round_to_lot


class _ReceivedBook:
    """The book as the policy sees it: deltas applied in ts_recv order up to a time."""

    def __init__(self, book: pl.DataFrame) -> None:
        ts = book[schema.TS_RECV].to_numpy().astype(np.int64)
        order = np.argsort(ts, kind="stable")  # canonical rows are in receive order already
        self.ts = np.ascontiguousarray(ts[order])
        self.side = np.ascontiguousarray(book[schema.SIDE].to_numpy().astype(np.int64)[order])
        self.price = np.ascontiguousarray(
            book[schema.PRICE_TICKS].to_numpy().astype(np.int64)[order]
        )
        self.size = np.ascontiguousarray(book[schema.SIZE].to_numpy().astype(np.int64)[order])
        self.snap = np.ascontiguousarray(
            book[schema.IS_SNAPSHOT].to_numpy().astype(np.bool_)[order]
        )
        self._book = new_book(256)
        self._st = new_state()
        self._i = 0
        self._first = np.full(1, -1, dtype=np.int64)

    def advance(self, t_ns: int) -> None:
        j = int(np.searchsorted(self.ts, t_ns, side="right"))
        if j > self._i:
            sl = slice(self._i, j)
            self._book = replay_kernel(
                self._book,
                self._st,
                self.ts[sl],
                self.side[sl],
                self.price[sl],
                self.size[sl],
                self.snap[sl],
                self._first,
            )
            self._i = j

    def best_bid_if_ok(self) -> int | None:
        """Best bid (ticks) when the book is two-sided, uncrossed and in sync, else None."""
        bid = int(best_price(self._book, self._st, 1))
        ask = int(best_price(self._book, self._st, -1))
        if self._st[ST_DESYNC] or bid == 0 or ask == 0 or bid >= ask:
            return None
        return bid


def decision_seconds(book: pl.DataFrame, trades: pl.DataFrame) -> tuple[int, int]:
    """(first, last) whole second (ns) of the events' span: the first after the first
    received book delta, the last at or before the last event (either clock)."""
    if book.height == 0:
        raise ValueError("no book events to audit")
    first = int(book[schema.TS_RECV].min())  # type: ignore[arg-type]
    last = max(
        int(book[c].max())  # type: ignore[arg-type]
        for c in (schema.TS_RECV, schema.TS_EVENT)
    )
    if trades.height:
        last = max(last, int(trades[schema.TS_EVENT].max()))  # type: ignore[arg-type]
    return (first // NS_PER_S + 1) * NS_PER_S, (last // NS_PER_S) * NS_PER_S


def audit_fills(
    book: pl.DataFrame,
    trades: pl.DataFrame,
    *,
    model: QueueModel,
    latency: Latency,
    size: int,
    lot: int,
) -> dict[str, Any]:
    """Run quote-best on canonical events; return the report (JSON-ready dict).

    `size` is rounded down to the lot (ValueError below one lot). Raises ValueError
    when there are no book events.
    """
    qty = round_to_lot(size, lot)
    first, last = decision_seconds(book, trades)
    ex = ExchangeReplay(book, trades, model=model, latency=latency, lot=lot)
    seen = _ReceivedBook(book)
    current: int | None = None
    next_id = 1
    n_fills = n_contracts = n_submit = n_cancel = n_skipped = 0
    fill_seconds: set[int] = set()
    for t in range(first, last + 1, NS_PER_S):
        for f in ex.run_until(t):
            n_fills += 1
            n_contracts += f.qty
            fill_seconds.add(-(-f.ts_ns // NS_PER_S))  # the second (T - 1 s, T] it fell in
        seen.advance(t)
        bid = seen.best_bid_if_ok()
        if current is not None and ex.orders[current].status not in ("pending", "live"):
            current = None
        if bid is None:
            n_skipped += 1
            continue
        if current is not None and ex.orders[current].price_ticks != bid:
            if not ex.orders[current].cancel_sent:
                ex.cancel(current, t)
                n_cancel += 1
            current = None
        if current is None:
            ex.submit(next_id, BUY, bid, qty, t)
            current = next_id
            next_id += 1
            n_submit += 1
    return {
        "policy": "quote-best",
        "queue": model.name,
        "power": model.power if model.name == "power_prob" else None,
        "latency_ms": {"entry": latency.entry_ms, "cancel": latency.cancel_ms},
        "size": qty,
        "lot": lot,
        "seconds": (last - first) // NS_PER_S + 1,
        "seconds_skipped": n_skipped,
        "first_ns": first,
        "last_ns": last,
        "orders": n_submit,
        "cancels": n_cancel,
        "rejected_post_only": ex.n_rejected,
        "fills": n_fills,
        "seconds_with_fill": len(fill_seconds),
        "filled_contracts": n_contracts,
    }
