"""BitMEX websocket messages -> canonical book deltas and trades (the ONE decoder).

Pure state machine, message by message: ingest replays recordings through it and the
live loop decodes the live socket through it (DEVELOPERS.md, recorded exception 2).

Tables (rows keyed by (symbol, id, side)):
- ``orderBookL2`` / ``orderBookL2_25``: ``partial`` -> every row a snapshot delta (the
  book is replaced); ``insert``/``update`` -> (side, price_ticks, new absolute size);
  ``delete`` -> size 0. An update may omit the price: it is kept from the insert or
  partial of that id (BitMEX 2021 sent none).
- ``orderBook10``: each row carries the whole top 10; the first one after a partial is a
  snapshot, later ones become the deltas between consecutive top-10 states.
- ``quote``: a depth-1 book (best bid/ask); the first row after a partial is a snapshot.
- ``trade``: ``insert`` rows -> (side +1 taker buy / -1 taker sell, price_ticks, size,
  ts_event). A trade ``partial`` is history from before the subscription: dropped.
Messages of a table before its first partial are dropped (counted). Rows of other
symbols are ignored (not counted). Only one book table feeds the book (``book_table``).

Book rows carry no exchange time in orderBookL2: their ``ts_event`` is the receive time.

Counting (for ingest's balance): ``rows_in`` = data rows of this symbol in the book
table and the trade table; every dropped one is counted in ``row_reasons``.
With ``strict=True`` (the live loop) an update/delete of an unknown id raises
`UnknownLevelError` (resubscribe for a fresh partial); with ``strict=False`` (ingest) it
is counted and dropped, and the book state machine reports the desync.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from core.clock import NS_PER_S
from core.instrument import InstrumentSpec, OffTickError

BOOK_TABLES = ("orderBookL2", "orderBookL2_25", "orderBook10", "quote")
ID_TABLES = ("orderBookL2", "orderBookL2_25")


class UnknownLevelError(RuntimeError):
    """An update or delete for a book level id that is not in the book (desync)."""


class RecordingFormatError(ValueError):
    """A recording line that is neither a header, a capture line nor a JSON-lines record."""


@dataclass
class Decoded:
    """One message's canonical rows for one symbol.

    ``book``: (side, price_ticks, size) in message order, all sharing ``ts_event``;
    ``trades``: (side, price_ticks, size, ts_event).
    """

    book: list[tuple[int, int, int]] = field(default_factory=list)
    is_snapshot: bool = False
    trades: list[tuple[int, int, int, int]] = field(default_factory=list)
    ts_event: int = 0


def parse_timestamp_ns(text: str) -> int:
    """ns UTC of a BitMEX ISO timestamp ``2021-07-22T22:36:09.757Z`` (exact, no float)."""
    s = text.strip().rstrip("Z")
    head, _, frac = s.partition(".")
    dt = datetime.fromisoformat(head + "+00:00")
    if frac and not frac.isdigit():
        raise ValueError(f"bad fraction in timestamp {text!r}")
    return int(dt.timestamp()) * NS_PER_S + (int((frac + "000000000")[:9]) if frac else 0)


def seconds_text_to_ns(text: str) -> int:
    """Exact int ns of decimal seconds text (``"1626993367.875267"``). Raises ValueError."""
    try:
        return int(Decimal(text.strip()) * NS_PER_S)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {text!r}") from exc


def parse_recording_line(line: str) -> tuple[int, dict[str, Any]] | None:
    """One recording line -> (ts_recv ns, message), or None for blank/header lines.

    Formats: the capture ``<unix seconds>: <json>`` (headers ``wss://... <-> t`` and
    ``wss://... <- t: <sent json>`` are what the client sent: skipped) and the project's
    JSON lines ``{"ts_recv": <int ns>, "msg": {...}}``. Raises RecordingFormatError.
    """
    s = line.strip()
    if not s:
        return None
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            raise RecordingFormatError(f"invalid JSON line: {exc}") from exc
        ts = obj.get("ts_recv") if isinstance(obj, dict) else None
        if not isinstance(ts, int) or isinstance(ts, bool) or not isinstance(obj.get("msg"), dict):
            raise RecordingFormatError("JSON line without integer 'ts_recv' and object 'msg'")
        return ts, obj["msg"]
    if s.startswith(("wss://", "ws://")) and (" <-> " in s or " <- " in s):
        return None
    head, sep, body = s.partition(": ")
    if not sep:
        raise RecordingFormatError("line is neither '<seconds>: <json>' nor a JSON record")
    try:
        ts = seconds_text_to_ns(head)
        msg = json.loads(body)
    except (ValueError, json.JSONDecodeError) as exc:
        raise RecordingFormatError(f"bad capture line: {exc}") from exc
    if not isinstance(msg, dict):
        raise RecordingFormatError("capture line payload is not a JSON object")
    return ts, msg


def _side(text: Any) -> int:
    if text == "Buy":
        return 1
    if text == "Sell":
        return -1
    raise ValueError(f"bad side {text!r}")


class BitmexWsDecoder:
    """Decoder of one symbol (see module docstring). Not thread-safe; cheap to reset."""

    def __init__(
        self,
        symbol: str,
        instrument: InstrumentSpec,
        book_table: str = "orderBookL2",
        strict: bool = True,
    ) -> None:
        if book_table not in BOOK_TABLES:
            raise ValueError(f"book_table must be one of {BOOK_TABLES}")
        self.symbol = symbol
        self.instrument = instrument
        self.book_table = book_table
        self.strict = strict
        self.rows_in = 0
        self.row_reasons: Counter[str] = Counter()
        self.rejected: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        """Forget every table's state (a reconnect): wait for fresh partials."""
        self._price_of: dict[tuple[int, int], int] = {}
        self._partial: set[str] = set()
        self._top: tuple[dict[int, int], dict[int, int]] | None = None  # orderBook10 / quote
        self._ticks_cache: dict[Any, int] = {}

    # -------------------------------------------------- helpers
    def _reject(self, reason: str, row: Any) -> None:
        self.row_reasons[reason] += 1
        if len(self.rejected) < 1000:
            self.rejected.append({"reason": reason, "row": row})

    def _ticks(self, price: Any) -> int:
        t = self._ticks_cache.get(price)
        if t is None:
            if isinstance(price, bool) or not isinstance(price, int | float | str):
                raise ValueError(f"bad price {price!r}")
            t = self.instrument.price_to_ticks(price)
            if len(self._ticks_cache) < 100_000:
                self._ticks_cache[price] = t
        return t

    def _size(self, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"bad size {v!r}")
        return v

    def has_partial(self, table: str) -> bool:
        return table in self._partial

    # -------------------------------------------------- decoding
    def decode(self, message: dict[str, Any], ts_recv: int) -> Decoded:
        """Decode one received message (all rows share ``ts_recv``). Pure apart from
        the decoder's own state. Raises UnknownLevelError only with ``strict``."""
        out = Decoded(ts_event=ts_recv)
        table = message.get("table")
        if table not in (self.book_table, "trade"):
            return out
        data = message.get("data")
        if not isinstance(data, list):
            return out
        rows = [r for r in data if isinstance(r, dict) and r.get("symbol") == self.symbol]
        action = message.get("action")
        self.rows_in += len(rows)
        if action == "partial":
            if rows or (message.get("filter") or {}).get("symbol") == self.symbol:
                self._partial.add(str(table))
                if table != "trade":
                    self._price_of.clear()
                    self._top = None
            if table == "trade":
                for r in rows:
                    self._reject("trade partial (history before the subscription)", r)
                return out
        elif table not in self._partial:
            for r in rows:
                self._reject(f"{table} message before its first partial", r)
            return out
        if table == "trade":
            self._trades(action, rows, out)
        elif table in ID_TABLES:
            self._l2(action, rows, out)
        elif table == "orderBook10":
            self._book10(rows, out)
        else:
            self._quote(rows, out)
        return out

    def _trades(self, action: Any, rows: list[dict[str, Any]], out: Decoded) -> None:
        if action != "insert":
            for r in rows:
                self._reject(f"trade {action} action", r)
            return
        for r in rows:
            try:
                out.trades.append(
                    (
                        _side(r["side"]),
                        self._ticks(r["price"]),
                        self._size(r["size"]),
                        parse_timestamp_ns(r["timestamp"]),
                    )
                )
            except OffTickError as exc:
                self._reject(f"off-tick price: {exc}", r)
            except (KeyError, TypeError, ValueError) as exc:
                self._reject(f"malformed trade row: {exc}", r)

    def _l2(self, action: Any, rows: list[dict[str, Any]], out: Decoded) -> None:
        if action == "partial":
            out.is_snapshot = True
        for r in rows:
            try:
                side = _side(r["side"])
                key = (int(r["id"]), side)
                if action in ("partial", "insert"):
                    px = self._ticks(r["price"])
                    self._price_of[key] = px
                    out.book.append((side, px, self._size(r["size"])))
                elif action in ("update", "delete"):
                    px_known = self._price_of.get(key)
                    if px_known is None:
                        if self.strict:
                            raise UnknownLevelError(
                                f"{action} of unknown level id={key[0]} side={r['side']}"
                            )
                        self._reject(f"{action} of unknown level id", r)
                        continue
                    if action == "update":
                        px = self._ticks(r["price"]) if "price" in r else px_known
                        out.book.append((side, px, self._size(r["size"])))
                    else:
                        del self._price_of[key]
                        out.book.append((side, px_known, 0))
                else:
                    self._reject(f"unknown action {action!r}", r)
            except OffTickError as exc:
                self._reject(f"off-tick price: {exc}", r)
            except (KeyError, TypeError, ValueError) as exc:
                self._reject(f"malformed book row: {exc}", r)

    def _levels_delta(self, bids: dict[int, int], asks: dict[int, int], out: Decoded) -> None:
        """Deltas from the previous top state to (bids, asks); snapshot if none."""
        if self._top is None:
            out.is_snapshot = True
            out.book += [(1, p, q) for p, q in sorted(bids.items(), reverse=True)]
            out.book += [(-1, p, q) for p, q in sorted(asks.items())]
        else:
            for side, old, new in ((1, self._top[0], bids), (-1, self._top[1], asks)):
                out.book += [(side, p, 0) for p in sorted(old) if p not in new]
                out.book += [(side, p, q) for p, q in sorted(new.items()) if old.get(p) != q]
        self._top = (bids, asks)

    def _book10(self, rows: list[dict[str, Any]], out: Decoded) -> None:
        for r in rows:
            try:
                bids = {self._ticks(p): self._size(q) for p, q in r["bids"] if q}
                asks = {self._ticks(p): self._size(q) for p, q in r["asks"] if q}
                if "timestamp" in r:
                    out.ts_event = parse_timestamp_ns(r["timestamp"])
            except OffTickError as exc:
                self._reject(f"off-tick price: {exc}", r)
                continue
            except (KeyError, TypeError, ValueError) as exc:
                self._reject(f"malformed orderBook10 row: {exc}", r)
                continue
            self._levels_delta(bids, asks, out)

    def _quote(self, rows: list[dict[str, Any]], out: Decoded) -> None:
        for r in rows:
            try:
                bids = (
                    {self._ticks(r["bidPrice"]): self._size(r["bidSize"])}
                    if r.get("bidSize")
                    else {}
                )
                asks = (
                    {self._ticks(r["askPrice"]): self._size(r["askSize"])}
                    if r.get("askSize")
                    else {}
                )
                out.ts_event = parse_timestamp_ns(r["timestamp"])
            except OffTickError as exc:
                self._reject(f"off-tick price: {exc}", r)
                continue
            except (KeyError, TypeError, ValueError) as exc:
                self._reject(f"malformed quote row: {exc}", r)
                continue
            self._levels_delta(bids, asks, out)

    @property
    def rows_rejected(self) -> int:
        return sum(self.row_reasons.values())
