"""Fixed-interval bar sampler over the one order book (`book.order_book`). Pure.

Contract (lead's cross-area contracts, DESIGN.md):
- Bars close at multiples of ``spec.interval_ns`` on the ``ts_recv`` clock. Bar
  ``(t - dt, t]`` holds the book after every delta with ``ts_recv <= t`` and aggregates
  the trades with ``ts_recv`` in ``(t - dt, t]``.
- Bars are emitted for every grid point from the first bar whose book is complete
  (both sides present, not crossed, not desynced) up to the bar holding the last event;
  empty intervals carry the book. Later bars whose book is not complete are still
  emitted with ``book_ok = False``.
- ``ofi_l1`` = sum over the bar's messages of the Cont-Kukanov-Stoikov level-1 e_n
  (see `book.order_book`). ``n_book_events`` counts deltas (rows), not messages.
- Execution columns (#17, what the broker's queue models read): with the previous
  emitted bar's ``bid_px_0`` / ``ask_px_0`` as the reference (the price a maker order
  placed or rolled at that close rests at), ``sell_at_bid_vol`` sums the bar's taker
  sells at exactly the reference bid and ``sell_thru_bid_first_ts`` / ``_last_ts`` are
  the ts_recv of the first / last taker sell strictly below it (-1: none); the ``buy_``
  columns mirror them at / above the reference ask. The first emitted bar and a bar
  whose previous close had no bid (ask) have 0 and -1.

ONE kernel (`_sample_kernel`) does the work for the batch `sample_bars` and the
streaming `BarSampler`; it is resumable (state in arrays), so streaming is the batch
kernel fed in chunks, and both give identical rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from book.order_book import (
    PIECE_ROWS,
    ST_BUY_AT,
    ST_BUY_THRU_FIRST,
    ST_BUY_THRU_LAST,
    ST_BUYHI,
    ST_BUYV,
    ST_DESYNC,
    ST_HAVE_T,
    ST_LAST_TS,
    ST_LASTTR,
    ST_NA,
    ST_NB,
    ST_NEV,
    ST_NTR,
    ST_OFI,
    ST_PREV_ASK,
    ST_PREV_BID,
    ST_SELL_AT,
    ST_SELL_THRU_FIRST,
    ST_SELL_THRU_LAST,
    ST_SELLLO,
    ST_SELLV,
    ST_STARTED,
    ST_TCUR,
    apply_message,
    has_room,
    new_book,
    new_state,
    reserve,
)
from core import schema
from core.numba_cache import njit

if TYPE_CHECKING:  # pragma: no cover
    from core.config.features import FeatureSpec

N_EVENT_COLS = len(schema.BAR_EVENT_COLUMNS)


def n_bar_cols(depth: int) -> int:
    return 1 + 4 * depth + N_EVENT_COLS


@njit(cache=True)
def _ceil_grid(t: np.int64, dt: np.int64) -> np.int64:
    q = t // dt
    if q * dt < t:
        q += 1
    return q * dt


@njit(cache=True)
def _close_bar(
    book: np.ndarray, st: np.ndarray, dt: np.int64, depth: int, out: np.ndarray, k: int
) -> int:
    nb = st[ST_NB]
    na = st[ST_NA]
    ok = st[ST_DESYNC] == 0 and nb > 0 and na > 0
    if st[ST_STARTED] == 0 and ok:
        st[ST_STARTED] = 1
    if st[ST_STARTED] == 1:
        out[0, k] = st[ST_TCUR]
        c = 1
        for i in range(depth):
            if i < nb:
                out[c, k] = book[0, nb - 1 - i]
                out[c + 1, k] = book[1, nb - 1 - i]
            else:
                out[c, k] = 0
                out[c + 1, k] = 0
            if i < na:
                out[c + 2, k] = -book[2, na - 1 - i]
                out[c + 3, k] = book[3, na - 1 - i]
            else:
                out[c + 2, k] = 0
                out[c + 3, k] = 0
            c += 4
        out[c, k] = 1 if ok else 0
        out[c + 1, k] = st[ST_NEV]
        out[c + 2, k] = st[ST_OFI]
        out[c + 3, k] = st[ST_BUYV]
        out[c + 4, k] = st[ST_SELLV]
        out[c + 5, k] = st[ST_NTR]
        out[c + 6, k] = st[ST_LASTTR]
        out[c + 7, k] = st[ST_BUYHI]
        out[c + 8, k] = st[ST_SELLLO]
        out[c + 9, k] = st[ST_SELL_AT]
        out[c + 10, k] = st[ST_SELL_THRU_FIRST]
        out[c + 11, k] = st[ST_SELL_THRU_LAST]
        out[c + 12, k] = st[ST_BUY_AT]
        out[c + 13, k] = st[ST_BUY_THRU_FIRST]
        out[c + 14, k] = st[ST_BUY_THRU_LAST]
        k += 1
        # the next bar's references: this close's emitted best bid / ask (0 when none)
        st[ST_PREV_BID] = book[0, nb - 1] if nb > 0 else 0
        st[ST_PREV_ASK] = -book[2, na - 1] if na > 0 else 0
    st[ST_SELL_AT] = 0
    st[ST_SELL_THRU_FIRST] = -1
    st[ST_SELL_THRU_LAST] = -1
    st[ST_BUY_AT] = 0
    st[ST_BUY_THRU_FIRST] = -1
    st[ST_BUY_THRU_LAST] = -1
    st[ST_NEV] = 0
    st[ST_OFI] = 0
    st[ST_BUYV] = 0
    st[ST_SELLV] = 0
    st[ST_NTR] = 0
    st[ST_BUYHI] = 0
    st[ST_SELLLO] = 0
    st[ST_TCUR] += dt
    return k


@njit(cache=True)
def _roll_to(
    book: np.ndarray, st: np.ndarray, e: np.int64, dt: np.int64, depth: int, out: np.ndarray, k: int
) -> int:
    """Close every open bar whose close time is before event time `e`."""
    if st[ST_HAVE_T] == 0:
        st[ST_HAVE_T] = 1
        st[ST_TCUR] = _ceil_grid(e, dt)
        return k
    if st[ST_STARTED] == 0 and e > st[ST_TCUR]:
        # nothing can be emitted yet: close once (to start if the book is complete)
        k = _close_bar(book, st, dt, depth, out, k)
        if st[ST_STARTED] == 0 and e > st[ST_TCUR]:
            st[ST_TCUR] = _ceil_grid(e, dt)
    while e > st[ST_TCUR]:
        k = _close_bar(book, st, dt, depth, out, k)
    return k


@njit(cache=True)
def _apply_trade(st: np.ndarray, e: np.int64, side: np.int64, p: np.int64, q: np.int64) -> None:
    """Add one trade (ts_recv `e`) to the open bar's trade and execution columns."""
    if side > 0:
        st[ST_BUYV] += q
        if p > st[ST_BUYHI]:
            st[ST_BUYHI] = p
        ref = st[ST_PREV_ASK]
        if ref > 0:
            if p == ref:
                st[ST_BUY_AT] += q
            elif p > ref:
                if st[ST_BUY_THRU_FIRST] < 0:
                    st[ST_BUY_THRU_FIRST] = e
                st[ST_BUY_THRU_LAST] = e
    else:
        st[ST_SELLV] += q
        if st[ST_SELLLO] == 0 or p < st[ST_SELLLO]:
            st[ST_SELLLO] = p
        ref = st[ST_PREV_BID]
        if ref > 0:
            if p == ref:
                st[ST_SELL_AT] += q
            elif p < ref:
                if st[ST_SELL_THRU_FIRST] < 0:
                    st[ST_SELL_THRU_FIRST] = e
                st[ST_SELL_THRU_LAST] = e
    st[ST_NTR] += 1
    if e > st[ST_LASTTR]:
        st[ST_LASTTR] = e


@njit(cache=True)
def _feed(
    book: np.ndarray,
    st: np.ndarray,
    bts: np.ndarray,
    bside: np.ndarray,
    bpx: np.ndarray,
    bsz: np.ndarray,
    bsnap: np.ndarray,
    tts: np.ndarray,
    tside: np.ndarray,
    tpx: np.ndarray,
    tsz: np.ndarray,
    dt: np.int64,
    depth: int,
    out: np.ndarray,
    at: np.ndarray,
) -> int:
    """Merge book messages and trades in ts_recv order from positions `at` = [next
    delta, next trade, rows written], closing bars on the way, until both are consumed
    (returns 0) or the next message does not fit the book (returns its row count; `at`
    points at it). The book is never replaced here: a loop that reassigns an array
    reference-counts it at every use (atomic operations that were half of the replay)."""
    nb = bts.shape[0]
    nt = tts.shape[0]
    i = at[0]
    j = at[1]
    k = at[2]
    need = 0
    while i < nb or j < nt:
        if j >= nt or (i < nb and bts[i] <= tts[j]):
            e = bts[i]
            m = i + 1
            while m < nb and bts[m] == e:
                m += 1
            if not has_room(book, st, m - i):
                need = m - i
                break
            if e > st[ST_TCUR] or st[ST_HAVE_T] == 0:  # a bar to close (or the first event)
                k = _roll_to(book, st, e, dt, depth, out, k)
            apply_message(book, st, bside, bpx, bsz, bsnap, i, m)
            st[ST_NEV] += m - i
            i = m
        else:
            e = tts[j]
            if e > st[ST_TCUR] or st[ST_HAVE_T] == 0:
                k = _roll_to(book, st, e, dt, depth, out, k)
            _apply_trade(st, e, tside[j], tpx[j], tsz[j])
            j += 1
    at[0] = i
    at[1] = j
    at[2] = k
    return need


@njit(cache=True)
def _sample_kernel(
    book: np.ndarray,
    st: np.ndarray,
    bts: np.ndarray,
    bside: np.ndarray,
    bpx: np.ndarray,
    bsz: np.ndarray,
    bsnap: np.ndarray,
    tts: np.ndarray,
    tside: np.ndarray,
    tpx: np.ndarray,
    tsz: np.ndarray,
    dt: np.int64,
    close_until: np.int64,
    depth: int,
    out: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Feed sorted book deltas and trades, then close bars with close time <= close_until.

    Returns (book array, number of rows written to `out`).
    """
    at = np.zeros(3, dtype=np.int64)
    while True:
        need = _feed(
            book, st, bts, bside, bpx, bsz, bsnap, tts, tside, tpx, tsz, dt, depth, out, at
        )
        if need == 0:
            break
        book = reserve(book, st, need)
    k = at[2]
    if st[ST_HAVE_T] == 1:
        while st[ST_TCUR] <= close_until:
            k = _close_bar(book, st, dt, depth, out, k)
    return book, k


def _max_rows(st: np.ndarray, first_ts: int | None, close_until: int, dt: int) -> int:
    if st[ST_HAVE_T]:
        start = int(st[ST_TCUR])
    elif first_ts is not None:
        start = -(-first_ts // dt) * dt
    else:
        return 0
    return max(0, (close_until - start) // dt + 1)


def _bar_buffer(
    st: np.ndarray, firsts: list[int], close_until: int, dt: int, depth: int
) -> np.ndarray:
    """Zeroed column-major room for every bar a feed can close (`_max_rows`), given the
    first timestamps of its book and trade arrays."""
    n = _max_rows(st, min(firsts) if firsts else None, close_until, dt)
    return np.zeros((n_bar_cols(depth), n), dtype=np.int64)


def _to_frame(rows: np.ndarray, depth: int) -> pl.DataFrame:
    """`rows` is column-major: (n_bar_cols, n) — one contiguous array per column."""
    cols = schema.bar_columns(depth)
    data: dict[str, np.ndarray] = {}
    for c, name in enumerate(cols):
        col = rows[c]
        data[name] = col.astype(np.bool_) if name == schema.BOOK_OK else col
    return pl.DataFrame(data)


def _arr(df: pl.DataFrame, name: str, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(df.get_column(name).to_numpy(), dtype=dtype)


def _side_arr(df: pl.DataFrame) -> np.ndarray:
    """The side column as it is stored when it is Int8 (the events' type: no int64 copy
    of every row; the kernels take either), else as int64."""
    col = df.get_column(schema.SIDE)
    return _arr(df, schema.SIDE, np.int8 if col.dtype == pl.Int8 else np.int64)


def sample_bars(book: pl.DataFrame, trades: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Canonical book deltas and trades (each sorted by ts_recv) -> bars.

    Columns: exactly ``core.schema.bar_columns(spec.depth)``; all int64 except
    ``book_ok`` (bool). Raises ValueError when an input is not sorted by ts_recv or a
    side is not +1/-1.
    """
    bts, bside, bpx, bsz, bsnap = _book_arrays(book)
    tts, tside, tpx, tsz = _trade_arrays(trades)
    return _sample_arrays(
        bts, bside, bpx, bsz, bsnap, tts, tside, tpx, tsz, spec.interval_ns, spec.depth
    )


def _book_arrays(
    book: pl.DataFrame,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        _arr(book, schema.TS_RECV, np.int64),
        _side_arr(book),
        _arr(book, schema.PRICE_TICKS, np.int64),
        _arr(book, schema.SIZE, np.int64),
        _arr(book, schema.IS_SNAPSHOT, np.bool_),
    )


def _no_book() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    e = np.zeros(0, dtype=np.int64)
    return e, e, e, e, np.zeros(0, dtype=np.bool_)


def _trade_arrays(trades: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        _arr(trades, schema.TS_RECV, np.int64),
        _side_arr(trades),
        _arr(trades, schema.PRICE_TICKS, np.int64),
        _arr(trades, schema.SIZE, np.int64),
    )


@njit(cache=True)
def _is_sorted(ts: np.ndarray) -> bool:
    n = ts.shape[0]
    i = 1
    while i < n and ts[i] >= ts[i - 1]:
        i += 1
    return i >= n


@njit(cache=True)
def _sides_ok(side: np.ndarray) -> bool:
    n = side.shape[0]
    i = 0
    while i < n and (side[i] == 1 or side[i] == -1):
        i += 1
    return i == n


def _check_sorted(ts: np.ndarray, what: str) -> None:
    if not _is_sorted(ts):  # one pass, no temporary arrays (18 M rows: ~30 ms less)
        raise ValueError(f"{what} must be sorted by ts_recv")


def _check_sides(side: np.ndarray, what: str) -> None:
    if not _sides_ok(side):
        raise ValueError(f"{what} side must be +1 or -1")


def _sample_arrays(
    bts: np.ndarray,
    bside: np.ndarray,
    bpx: np.ndarray,
    bsz: np.ndarray,
    bsnap: np.ndarray,
    tts: np.ndarray,
    tside: np.ndarray,
    tpx: np.ndarray,
    tsz: np.ndarray,
    dt: int,
    depth: int,
) -> pl.DataFrame:
    _check_sorted(bts, "book deltas")
    _check_sorted(tts, "trades")
    _check_sides(bside, "book")
    _check_sides(tside, "trade")
    st = new_state()
    firsts = [int(a[0]) for a in (bts, tts) if a.shape[0]]
    lasts = [int(a[-1]) for a in (bts, tts) if a.shape[0]]
    if not firsts:
        return _to_frame(np.zeros((n_bar_cols(depth), 0), dtype=np.int64), depth)
    close_until = -(-max(lasts) // dt) * dt
    out = np.zeros((n_bar_cols(depth), _max_rows(st, min(firsts), close_until, dt)), dtype=np.int64)
    _, k = _sample_kernel(
        new_book(256),
        st,
        bts,
        bside,
        bpx,
        bsz,
        bsnap,
        tts,
        tside,
        tpx,
        tsz,
        np.int64(dt),
        np.int64(close_until),
        depth,
        out,
    )
    return _to_frame(np.ascontiguousarray(out[:, :k]) if k < out.shape[1] else out, depth)


class BarSampler:
    """Streaming twin of `sample_bars` for the live loop (same kernel, same rows).

    Feed events in ts_recv order with `on_book` / `on_message` / `on_trade`, then call
    `advance(now_ns)`: it promises that every event with ``ts_recv <= now_ns`` has been
    delivered, applies them and returns the bars with close time ``<= now_ns`` as dicts
    keyed by ``core.schema.bar_columns(depth)`` (ints; ``book_ok`` a bool). Events with ``ts_recv > now_ns`` stay
    buffered. Raises ValueError on an event older than one already applied.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.dt = int(spec.interval_ns)
        self.depth = int(spec.depth)
        self._book = new_book(256)
        self._st = new_state()
        self._b: list[tuple[int, int, int, int, bool]] = []
        self._t: list[tuple[int, int, int, int]] = []
        self._cols = schema.bar_columns(self.depth)
        self._applied_ts = -1

    def _check_time(self, ts_recv: int) -> None:
        if ts_recv < self._applied_ts:
            raise ValueError(
                f"event at {ts_recv} is older than already applied time {self._applied_ts}"
            )

    def on_book(
        self, ts_recv: int, side: int, price_ticks: int, size: int, is_snapshot: bool
    ) -> None:
        self._check_time(ts_recv)
        if side not in (1, -1):
            raise ValueError("book side must be +1 or -1")
        self._b.append((int(ts_recv), int(side), int(price_ticks), int(size), bool(is_snapshot)))

    def on_message(
        self,
        ts_recv: int,
        sides: list[int] | np.ndarray,
        prices: list[int] | np.ndarray,
        sizes: list[int] | np.ndarray,
        is_snapshot: bool | list[bool] | np.ndarray = False,
    ) -> None:
        """A whole message (all rows share ts_recv)."""
        n = len(sides)
        snaps = (
            [bool(is_snapshot)] * n
            if isinstance(is_snapshot, bool | np.bool_)
            else list(is_snapshot)
        )
        for s, p, q, f in zip(sides, prices, sizes, snaps, strict=True):
            self.on_book(ts_recv, int(s), int(p), int(q), bool(f))

    def on_trade(self, ts_recv: int, side: int, price_ticks: int, size: int) -> None:
        self._check_time(ts_recv)
        if side not in (1, -1):
            raise ValueError("trade side must be +1 or -1")
        self._t.append((int(ts_recv), int(side), int(price_ticks), int(size)))

    @property
    def book_ok(self) -> bool:
        """Book complete after the events applied so far."""
        return bool(self._st[ST_DESYNC] == 0 and self._st[ST_NB] > 0 and self._st[ST_NA] > 0)

    @property
    def desynced(self) -> bool:
        """The book is desynced (unknown-level delete, negative size or crossed after a
        message) and stays so until the next snapshot."""
        return bool(self._st[ST_DESYNC])

    def advance(self, now_ns: int) -> list[dict[str, int | bool]]:
        now_ns = int(now_ns)
        b_now = [e for e in self._b if e[0] <= now_ns]
        t_now = [e for e in self._t if e[0] <= now_ns]
        self._b = [e for e in self._b if e[0] > now_ns]
        self._t = [e for e in self._t if e[0] > now_ns]
        b_now.sort(key=lambda e: e[0])
        t_now.sort(key=lambda e: e[0])
        ba = np.array(b_now, dtype=np.int64).reshape(-1, 5)
        ta = np.array(t_now, dtype=np.int64).reshape(-1, 4)
        close_until = (now_ns // self.dt) * self.dt
        firsts = [int(a[0, 0]) for a in (ba, ta) if a.shape[0]]
        out = _bar_buffer(self._st, firsts, close_until, self.dt, self.depth)
        self._book, k = _sample_kernel(
            self._book,
            self._st,
            np.ascontiguousarray(ba[:, 0]),
            np.ascontiguousarray(ba[:, 1]),
            np.ascontiguousarray(ba[:, 2]),
            np.ascontiguousarray(ba[:, 3]),
            np.ascontiguousarray(ba[:, 4].astype(np.bool_)),
            np.ascontiguousarray(ta[:, 0]),
            np.ascontiguousarray(ta[:, 1]),
            np.ascontiguousarray(ta[:, 2]),
            np.ascontiguousarray(ta[:, 3]),
            np.int64(self.dt),
            np.int64(close_until),
            self.depth,
            out,
        )
        self._applied_ts = max(self._applied_ts, now_ns)
        self._st[ST_LAST_TS] = self._applied_ts
        rows = []
        ok_i = self._cols.index(schema.BOOK_OK)
        for r in out[:, :k].T:
            d = {c: int(v) for c, v in zip(self._cols, r.tolist(), strict=True)}
            d[schema.BOOK_OK] = bool(r[ok_i])
            rows.append(d)
        return rows


class ResumableSampler:
    """`sample_bars` fed one stretch of history at a time (a day of events, #19): the
    kernel's state (book array, scalar state) is carried from one `feed` to the next,
    so feeding days in order and closing the bars of each day gives, bar for bar, what
    one `sample_bars` over every day gives, holding one day of events at a time.

    `feed(book, trades, close_until)` applies the events (sorted by ts_recv, none older
    than an event already fed) and returns the bars with close time ``<= close_until``
    (close a day with ``day_end - 1``: the bar closing at midnight holds the next day's
    events at 00:00 exactly). `finish(last_ts)` closes the last bar as `sample_bars`
    does (at ``ceil(last_ts / dt) * dt``). `state()` / `from_state` save and restore
    the sampler between processes (a nightly resumes from yesterday's state)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.dt = int(spec.interval_ns)
        self.depth = int(spec.depth)
        self._book = new_book(256)
        self._st = new_state()
        self._last = -1  # last ts_recv fed

    def state(self) -> dict[str, np.ndarray]:
        return {
            "book": self._book.copy(),
            "st": self._st.copy(),
            "last": np.array([self._last], dtype=np.int64),
        }

    @classmethod
    def from_state(cls, spec: FeatureSpec, state: dict[str, np.ndarray]) -> ResumableSampler:
        s = cls(spec)
        if state["st"].shape != s._st.shape:
            raise ValueError(
                f"sampler state of {state['st'].shape[0]} slots, this sampler keeps "
                f"{s._st.shape[0]}: a state saved by another version; sample from the start"
            )
        s._book = np.ascontiguousarray(state["book"], dtype=np.int64)
        s._st = np.ascontiguousarray(state["st"], dtype=np.int64)
        s._last = int(state["last"][0])
        return s

    def feed(
        self,
        book: pl.DataFrame,
        trades: pl.DataFrame,
        close_until: int,
        piece_rows: int = PIECE_ROWS,
    ) -> pl.DataFrame:
        """Raises ValueError on unsorted input, a bad side, an event older than one
        already fed, or an event after `close_until`. The book goes to the kernel about
        `piece_rows` rows at a time (`feed_stream`)."""
        return self.feed_stream(book.iter_slices(piece_rows), trades, close_until)

    def feed_stream(
        self, book_pieces: Iterable[pl.DataFrame], trades: pl.DataFrame, close_until: int
    ) -> pl.DataFrame:
        """`feed` of a book given as consecutive frames in ts_recv order (a day's file
        read a batch of row groups at a time): each frame's last message is held back
        and joined to the next (a message may be cut between frames), the rest goes to
        the kernel with the trades before that message and its bars closed just before
        it. The bars of one feed (tested), without the day's book in memory or a numpy
        copy of its columns (#19: ~0.5 GB for 18 M rows)."""
        trade_ts = trades[schema.TS_RECV]
        parts = []
        t0 = 0
        held: pl.DataFrame | None = None
        for piece in book_pieces:
            if held is not None:
                piece = pl.concat([held, piece])
            if piece.height == 0:
                continue
            ts = piece[schema.TS_RECV]
            last = int(ts[-1])
            cut = int(ts.search_sorted(last, side="left"))  # where the last message starts
            held = piece.slice(cut)
            if cut == 0:
                continue
            until = last - 1
            t1 = max(
                t0, int(trade_ts.search_sorted(until, side="right"))
            )  # unsorted: refused below
            b, t = piece.slice(0, cut), trades.slice(t0, t1 - t0)
            parts.append(self._run(*_book_arrays(b), *_trade_arrays(t), until))
            t0 = t1
        rest = _book_arrays(held) if held is not None else _no_book()
        parts.append(self._run(*rest, *_trade_arrays(trades.slice(t0)), close_until))
        return parts[0] if len(parts) == 1 else pl.concat(parts)

    def finish(self, last_ts: int) -> pl.DataFrame:
        """The bars `sample_bars` closes after the last event at `last_ts`."""
        e = np.zeros(0, dtype=np.int64)
        return self._run(*_no_book(), e, e, e, e, -(-int(last_ts) // self.dt) * self.dt)

    def _run(
        self,
        bts: np.ndarray,
        bside: np.ndarray,
        bpx: np.ndarray,
        bsz: np.ndarray,
        bsnap: np.ndarray,
        tts: np.ndarray,
        tside: np.ndarray,
        tpx: np.ndarray,
        tsz: np.ndarray,
        close_until: int,
    ) -> pl.DataFrame:
        _check_sorted(bts, "book deltas")
        _check_sorted(tts, "trades")
        _check_sides(bside, "book")
        _check_sides(tside, "trade")
        firsts = [int(a[0]) for a in (bts, tts) if a.shape[0]]
        if firsts and min(firsts) < self._last:
            raise ValueError(f"event at {min(firsts)} is older than one already fed ({self._last})")
        lasts = [int(a[-1]) for a in (bts, tts) if a.shape[0]]
        if lasts and max(lasts) > close_until:
            raise ValueError(f"event at {max(lasts)} is after close_until {close_until}")
        out = _bar_buffer(self._st, firsts, close_until, self.dt, self.depth)
        self._book, k = _sample_kernel(
            self._book,
            self._st,
            bts,
            bside,
            bpx,
            bsz,
            bsnap,
            tts,
            tside,
            tpx,
            tsz,
            np.int64(self.dt),
            np.int64(close_until),
            self.depth,
            out,
        )
        if lasts:
            self._last = max(self._last, *lasts)
        return _to_frame(np.ascontiguousarray(out[:, :k]) if k < out.shape[1] else out, self.depth)
