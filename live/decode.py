"""BitMEX table messages -> canonical book deltas and trades, for the live loop.

Pure state machine (no I/O). DEVELOPERS.md places the one BitMEX websocket decoder in
`ingest/bitmex_ws.py`; `make_decoder` uses it as soon as that module provides
`BitmexWsDecoder`, and falls back to `LiveDecoder` below (same contract) until then.

Contract of `decode(msg, ts_recv)`:
- orderBookL2 / orderBookL2_25 `partial` -> every row as a snapshot delta (the book is
  replaced); `insert` / `update` -> (side, price_ticks, new absolute size); `delete` ->
  size 0. Updates may omit the price: it is kept from the insert or partial of that id.
- An `update` or `delete` of an id never seen raises `UnknownLevelError` (a desync: the
  caller resubscribes for a fresh partial).
- trade `insert` (and `partial`: recent history, ignored, it is before our time) ->
  (side +1 taker buy / -1 taker sell, price_ticks, size, ts_event ns).
- Rows of other symbols are ignored. Prices off the tick grid raise OffTickError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.clock import NS_PER_S
from core.instrument import InstrumentSpec

BOOK_TABLES = ("orderBookL2", "orderBookL2_25")


class UnknownLevelError(RuntimeError):
    """An update or delete for a book level id that is not in the book (desync)."""


@dataclass
class Decoded:
    """One message's canonical rows. `book` rows are (side, price_ticks, size)."""

    book: list[tuple[int, int, int]] = field(default_factory=list)
    is_snapshot: bool = False
    trades: list[tuple[int, int, int, int]] = field(
        default_factory=list
    )  # side, px, size, ts_event


def parse_timestamp_ns(text: str) -> int:
    """ns UTC of a BitMEX timestamp `2021-07-22T22:36:09.757Z`."""
    s = text.rstrip("Z")
    head, _, frac = s.partition(".")
    dt = datetime.fromisoformat(head + "+00:00")
    frac_ns = int((frac + "000000000")[:9]) if frac else 0
    return int(dt.timestamp()) * NS_PER_S + frac_ns


class LiveDecoder:
    """Decoder of one symbol's orderBookL2 + trade messages (see module docstring)."""

    def __init__(self, symbol: str, instrument: InstrumentSpec) -> None:
        self.symbol = symbol
        self.instrument = instrument
        self._price_of: dict[tuple[int, int], int] = {}  # (id, side) -> price_ticks
        self._ticks_cache: dict[Any, int] = {}

    def reset(self) -> None:
        self._price_of.clear()

    def _ticks(self, price: Any) -> int:
        t = self._ticks_cache.get(price)
        if t is None:  # exact Decimal check once per distinct price (a hot path in replays)
            t = self.instrument.price_to_ticks(price)
            if len(self._ticks_cache) < 100_000:
                self._ticks_cache[price] = t
        return t

    def decode(self, msg: dict[str, Any], ts_recv: int) -> Decoded:
        table = msg.get("table")
        action = msg.get("action")
        rows = [r for r in msg.get("data") or [] if r.get("symbol") == self.symbol]
        out = Decoded()
        if table in BOOK_TABLES:
            if not rows and (msg.get("filter") or {}).get("symbol") != self.symbol:
                return out  # another symbol's message (a multi-symbol recording)
            if action == "partial":
                self._price_of.clear()
                out.is_snapshot = True
            for r in rows:
                side = 1 if r["side"] == "Buy" else -1
                key = (int(r["id"]), side)
                if action in ("partial", "insert"):
                    px = self._ticks(r["price"])
                    self._price_of[key] = px
                    out.book.append((side, px, int(r["size"])))
                elif action == "update":
                    px = self._price_of.get(key)
                    if px is None:
                        raise UnknownLevelError(
                            f"update of unknown level id={key[0]} side={r['side']}"
                        )
                    out.book.append((side, px, int(r["size"])))
                elif action == "delete":
                    px = self._price_of.pop(key, None)
                    if px is None:
                        raise UnknownLevelError(
                            f"delete of unknown level id={key[0]} side={r['side']}"
                        )
                    out.book.append((side, px, 0))
        elif table == "trade" and action == "insert":
            for r in rows:
                side = 1 if r["side"] == "Buy" else -1
                out.trades.append(
                    (
                        side,
                        self._ticks(r["price"]),
                        int(r["size"]),
                        parse_timestamp_ns(r["timestamp"]),
                    )
                )
        return out


def make_decoder(symbol: str, instrument: InstrumentSpec) -> LiveDecoder:
    """The decoder the live loop uses (see module docstring)."""
    return LiveDecoder(symbol, instrument)
