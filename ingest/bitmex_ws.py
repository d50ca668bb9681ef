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

Counting (for ingest's balance): every message counts as its ``data`` elements, or as
one unit when it has none (an info or subscribe answer, a non-object message, empty
``data``). ``rows_in`` = data rows of this symbol in the book table and the trade table,
plus rows whose symbol cannot be told (not a JSON object): every dropped one is counted
in ``row_reasons`` (``rows_rejected``). Everything else is counted in
``filtered_reasons`` (``rows_filtered``): rows of other symbols, other tables, messages
without rows. So ``units == rows_in + rows_filtered`` per message (`message_units`).

No value can make `decode` raise (tested by a Hypothesis fuzz): a price that is not a
finite positive decimal on the tick grid, a size that is not an integer in
``[0, 2**63)``, a timestamp that is not ISO text within int64 ns, a missing key, a
wrong type: the row is rejected with its reason. The one exception is deliberate: with
``strict=True`` (the live loop) an update/delete of an unknown id raises
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
from core.jsontypes import JsonObject, JsonValue

BOOK_TABLES = ("orderBookL2", "orderBookL2_25", "orderBook10", "quote")
ID_TABLES = ("orderBookL2", "orderBookL2_25")
#: exclusive upper bound of every integer the decoder emits (int64 columns downstream)
INT64_END = 1 << 63
#: what a row-level decode may raise on a bad value; all become a rejection with a reason
#: (ArithmeticError covers decimal's InvalidOperation and OverflowError)
BAD_VALUE = (KeyError, IndexError, TypeError, ValueError, ArithmeticError, AttributeError)


class UnknownLevelError(RuntimeError):
    """An update or delete for a book level id that is not in the book (desync)."""


class RecordingFormatError(ValueError):
    """A recording line that is neither a header, a capture line nor a JSON-lines record."""


@dataclass
class Decoded:
    """One message's canonical rows for one symbol.

    ``book``: (side, price_ticks, size) in message order, all sharing ``ts_event``;
    ``trades``: (side, price_ticks, size, ts_event); ``trade_ids``: the exchange's id of
    each trade (``trdMatchID``), None where the row has none (ingest's de-duplication).
    """

    book: list[tuple[int, int, int]] = field(default_factory=list)
    is_snapshot: bool = False
    trades: list[tuple[int, int, int, int]] = field(default_factory=list)
    ts_event: int = 0
    trade_ids: list[str | None] = field(default_factory=list)


def parse_timestamp_ns(text: object) -> int:
    """ns UTC of a BitMEX ISO timestamp ``2021-07-22T22:36:09.757Z`` (exact, no float).

    Raises ValueError for anything else: not text, not ISO, a zone other than UTC,
    before 1970 or at or after 2262 (outside int64 ns)."""
    if not isinstance(text, str):
        raise ValueError(f"timestamp is not text: {text!r}"[:200])
    s = text.strip().removesuffix("Z")
    head, _, frac = s.partition(".")
    if frac and not (frac.isascii() and frac.isdigit()):
        raise ValueError(f"bad fraction in timestamp {text!r}"[:200])
    try:
        dt = datetime.fromisoformat(head + "+00:00")
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"bad timestamp {text!r}"[:200]) from exc
    ns = int(dt.timestamp()) * NS_PER_S + (int((frac + "000000000")[:9]) if frac else 0)
    if not 0 <= ns < INT64_END:
        raise ValueError(f"timestamp outside int64 ns: {text!r}"[:200])
    return ns


def seconds_text_to_ns(text: str) -> int:
    """Exact int ns of decimal seconds text (``"1626993367.875267"``), in
    ``[0, 2**63)``. Raises ValueError for anything else (NaN, infinity, 1e400)."""
    try:
        d = Decimal(text.strip())
        if not d.is_finite():
            raise ValueError(f"not a finite number: {text!r}"[:200])
        ns = int(d * NS_PER_S)
    except (InvalidOperation, ArithmeticError) as exc:
        raise ValueError(f"not a decimal number: {text!r}"[:200]) from exc
    if not 0 <= ns < INT64_END:
        raise ValueError(f"time outside int64 ns: {text!r}"[:200])
    return ns


def parse_recording_line(line: str) -> tuple[int, JsonObject] | None:
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
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise RecordingFormatError(f"invalid JSON line: {exc}"[:300]) from exc
        ts = obj.get("ts_recv") if isinstance(obj, dict) else None
        if not isinstance(ts, int) or isinstance(ts, bool) or not isinstance(obj.get("msg"), dict):
            raise RecordingFormatError("JSON line without integer 'ts_recv' and object 'msg'")
        if not 0 <= ts < INT64_END:
            raise RecordingFormatError("JSON line with 'ts_recv' outside int64 ns")
        return ts, obj["msg"]
    if s.startswith(("wss://", "ws://")) and (" <-> " in s or " <- " in s):
        return None
    head, sep, body = s.partition(": ")
    if not sep:
        raise RecordingFormatError("line is neither '<seconds>: <json>' nor a JSON record")
    try:
        ts = seconds_text_to_ns(head)
        msg = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise RecordingFormatError(f"bad capture line: {exc}"[:300]) from exc
    if not isinstance(msg, dict):
        raise RecordingFormatError("capture line payload is not a JSON object")
    return ts, msg


def _side(text: Any) -> int:
    if isinstance(text, str):
        if text == "Buy":
            return 1
        if text == "Sell":
            return -1
    raise ValueError(f"bad side {text!r}"[:200])


def _level_id(v: Any) -> int:
    """A book level id: an integer (BitMEX sends JSON integers), nothing else."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"bad level id {v!r}"[:200])
    return v


def message_units(message: Any) -> int:
    """How many counting units a message is: its data elements, or 1 when it has none."""
    data = message.get("data") if isinstance(message, dict) else None
    return len(data) if isinstance(data, list) and data else 1


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
        self.filtered_reasons: Counter[str] = Counter()
        self.rejected: list[JsonObject] = []  # {"reason", "row"}: the first 1000
        self.reset()

    def reset(self) -> None:
        """Forget every table's state (a reconnect): wait for fresh partials."""
        self._price_of: dict[tuple[int, int], int] = {}
        self._partial: set[str] = set()
        self._top: tuple[dict[int, int], dict[int, int]] | None = None  # orderBook10 / quote
        self._ticks_cache: dict[Any, int] = {}

    # -------------------------------------------------- helpers
    def _reject(self, reason: str, row: JsonValue) -> None:
        self.row_reasons[reason] += 1
        if len(self.rejected) < 1000:
            self.rejected.append({"reason": reason[:300], "row": row})

    def _filter(self, reason: str, n: int = 1) -> None:
        self.filtered_reasons[reason] += n

    def _ticks(self, price: Any) -> int:
        """Integer ticks of a price: a finite positive number (or decimal text) on the tick
        grid, below 2**63 ticks. Raises OffTickError or ValueError (never
        InvalidOperation or OverflowError: "abc", 1e400, NaN are values like any other)."""
        if isinstance(price, bool) or not isinstance(price, int | float | str):
            raise ValueError(f"bad price {price!r}"[:200])
        t = self._ticks_cache.get(price)
        if t is None:
            try:
                # str() of a float is its shortest repr: 100.1 stays 100.1, not the binary
                # 100.0999... that Decimal(float) would give (off the tick grid)
                d = Decimal(price.strip() if isinstance(price, str) else str(price))
            except (InvalidOperation, ArithmeticError, ValueError) as exc:
                raise ValueError(f"bad price {price!r}"[:200]) from exc
            if not d.is_finite() or d <= 0:
                raise ValueError(f"bad price {price!r} (not a finite positive number)"[:200])
            try:
                t = self.instrument.price_to_ticks(d)
            except (InvalidOperation, ArithmeticError) as exc:  # absurd exponents
                raise ValueError(f"bad price {price!r}"[:200]) from exc
            if not 0 < t < INT64_END:
                raise ValueError(f"bad price {price!r} (outside int64 ticks)"[:200])
            if len(self._ticks_cache) < 100_000:
                self._ticks_cache[price] = t
        return t

    def _size(self, v: Any) -> int:
        """A size: an integer in [0, 2**63) (BitMEX sends JSON integers). Raises ValueError."""
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < INT64_END:
            raise ValueError(f"bad size {v!r}"[:200])
        return v

    def has_partial(self, table: str) -> bool:
        return table in self._partial

    # -------------------------------------------------- decoding
    def decode(self, message: JsonValue, ts_recv: int) -> Decoded:
        """Decode one received message (all rows share ``ts_recv``). Pure apart from
        the decoder's own state. Never raises for bad content (it is counted with its
        reason, see the module doc); raises UnknownLevelError only with ``strict``."""
        out = Decoded(ts_event=ts_recv)
        if not isinstance(message, dict):
            self.rows_in += 1
            self._reject("message is not a JSON object", str(message)[:300])
            return out
        table = message.get("table")
        data = message.get("data")
        ours = table == self.book_table or table == "trade"
        if not isinstance(data, list) or not (data or ours):
            self._filter(
                f"{table[:40]} message without data rows"
                if isinstance(table, str)
                else "message without a table (info, subscribe, error)"
            )
            return out
        if not data:  # an empty partial still resets its table
            self._filter(f"{table} message without data rows")
        elif not ours:
            self._filter(
                f"table {table[:40]} not ingested" if isinstance(table, str) else "bad table name",
                len(data),
            )
            return out
        rows: list[JsonObject] = []
        for r in data:
            if not isinstance(r, dict):
                self.rows_in += 1
                self._reject(f"malformed {table} row (not a JSON object)", str(r)[:300])
            elif r.get("symbol") == self.symbol:
                rows.append(r)
            else:
                self._filter("row of another symbol")
        action = message.get("action")
        self.rows_in += len(rows)
        try:
            return self._decode_rows(message, str(table), action, rows, out)
        except UnknownLevelError:
            raise
        except BAD_VALUE as exc:  # a bug guard: the row handlers catch their own values
            for r in rows:
                self._reject(f"undecodable {table} message: {type(exc).__name__}", r)
            return Decoded(ts_event=ts_recv)

    def _note_partial(self, message: JsonObject, table: str, rows: list[JsonObject]) -> None:
        """Record a partial of `table` for this symbol (it has rows of it, or its filter
        names the symbol): the table's state starts afresh."""
        flt = message.get("filter")
        named = isinstance(flt, dict) and flt.get("symbol") == self.symbol
        if not (rows or named):
            return
        self._partial.add(table)
        if table != "trade":
            self._price_of.clear()
            self._top = None

    def _decode_rows(
        self,
        message: JsonObject,
        table: str,
        action: JsonValue,
        rows: list[JsonObject],
        out: Decoded,
    ) -> Decoded:
        if action == "partial":
            self._note_partial(message, table, rows)
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

    def _trades(self, action: JsonValue, rows: list[JsonObject], out: Decoded) -> None:
        if action != "insert":
            for r in rows:
                self._reject(f"trade {str(action)[:40]} action", r)
            return
        for r in rows:
            try:
                trade = (
                    _side(r["side"]),
                    self._ticks(r["price"]),
                    self._size(r["size"]),
                    parse_timestamp_ns(r["timestamp"]),
                )
                tid = r.get("trdMatchID")
                out.trades.append(trade)
                out.trade_ids.append(tid if isinstance(tid, str) and tid else None)
            except OffTickError as exc:
                self._reject(f"off-tick price: {exc}", r)
            except BAD_VALUE as exc:
                self._reject(f"malformed trade row: {exc}", r)

    def _l2(self, action: JsonValue, rows: list[JsonObject], out: Decoded) -> None:
        if action == "partial":
            out.is_snapshot = True
        for r in rows:
            try:
                side = _side(r["side"])
                key = (_level_id(r["id"]), side)
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
                    self._reject(f"unknown action {str(action)[:40]!r}", r)
            except OffTickError as exc:
                self._reject(f"off-tick price: {exc}", r)
            except BAD_VALUE as exc:
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

    def _top_levels(self, levels: JsonValue) -> dict[int, int]:
        """price ticks -> size of an orderBook10 side, ``[[price, size], ...]`` (levels of
        size 0 skipped). Raises ValueError or OffTickError."""
        if not isinstance(levels, list):
            raise ValueError(f"bad levels {levels!r}"[:200])
        out: dict[int, int] = {}
        for level in levels:
            if not isinstance(level, list) or len(level) != 2:
                raise ValueError(f"bad level {level!r}"[:200])
            p, q = level
            if q:
                out[self._ticks(p)] = self._size(q)
        return out

    def _book10(self, rows: list[JsonObject], out: Decoded) -> None:
        for r in rows:
            try:
                bids = self._top_levels(r["bids"])
                asks = self._top_levels(r["asks"])
                if "timestamp" in r:
                    out.ts_event = parse_timestamp_ns(r["timestamp"])
            except OffTickError as exc:
                self._reject(f"off-tick price: {exc}", r)
                continue
            except BAD_VALUE as exc:
                self._reject(f"malformed orderBook10 row: {exc}", r)
                continue
            self._levels_delta(bids, asks, out)

    def _quote(self, rows: list[JsonObject], out: Decoded) -> None:
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
            except BAD_VALUE as exc:
                self._reject(f"malformed quote row: {exc}", r)
                continue
            self._levels_delta(bids, asks, out)

    @property
    def rows_rejected(self) -> int:
        return sum(self.row_reasons.values())

    @property
    def rows_filtered(self) -> int:
        """Units not for this decoder (other symbols and tables, messages without rows)."""
        return sum(self.filtered_reasons.values())
