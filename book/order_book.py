"""The ONE order-book state machine (integer ticks and sizes). Pure.

Representation: one int64 array ``book`` of shape (4, capacity):
row 0 = bid keys, row 1 = bid sizes, row 2 = ask keys, row 3 = ask sizes.
Keys are sorted ascending with the BEST level at the END of the used part
(bid key = price, ask key = -price), so the frequent updates near the touch
cost a short search from the end plus a short shift (a memmove of the levels
between the touch and the level). The array doubles when a side is full.

All transitions live in numba ``@njit`` kernels (`apply_message_kernel`) that the
Python class `OrderBook`, the batch sampler and the streaming sampler share: there is
no second implementation of the book anywhere in Chappie.

Contract (DESIGN.md, lead's cross-area contracts):
- A *message* is a run of consecutive deltas with equal ``ts_recv``; it is applied as
  a unit and the book is checked for a cross after each complete message.
- A delta carries the new absolute level size; 0 deletes the level.
- A run of ``is_snapshot=True`` rows that starts after non-snapshot rows (or at the
  start) clears the book first, and clears a previous desync.
- Desyncs: delete of an unknown level, a negative size, a crossed book after a
  message. A desynced book stays flagged (``desynced``) until the next snapshot; it is
  never silently reported as a good book.
- Order-flow imbalance: each non-snapshot message whose before and after states have
  both sides adds the Cont, Kukanov and Stoikov (2014, "The price impact of order book
  events", J. Fin. Econometrics 12(1)) level-1 e_n to the ``ofi`` accumulator.
  Snapshot messages (a resynchronisation, not order flow) and desynced states add 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numba.core import cgutils, types
from numba.extending import intrinsic

from core.numba_cache import njit

# ------------------------------------------------------------------ state layout
# Scalar state shared by the book and the sampler kernels: one int64 array.
ST_NB = 0  # bid levels in use
ST_NA = 1  # ask levels in use
ST_DESYNC = 2  # 1 while the book is desynced (until the next snapshot)
ST_IN_SNAP = 3  # 1 when the last applied row was a snapshot row
ST_STARTED = 4  # sampler: first complete bar emitted
ST_TCUR = 5  # sampler: close time of the open bar
ST_HAVE_T = 6  # sampler: ST_TCUR valid
ST_NEV = 7  # sampler: book deltas in the open bar
ST_OFI = 8  # OFI accumulator (contracts)
ST_BUYV = 9
ST_SELLV = 10
ST_NTR = 11
ST_LASTTR = 12  # ns of the last trade, -1 before any
ST_BUYHI = 13
ST_SELLLO = 14
ST_N_UNKNOWN = 15  # desyncs: delete of an unknown level
ST_N_CROSSED = 16  # desyncs: crossed book after a message
ST_N_MSG = 17  # messages applied
ST_LAST_TS = 18  # last ts_recv fed (order check), -1 before any
ST_N_BADSIZE = 19  # desyncs: negative size
ST_N_SNAP = 20  # snapshots started
# sampler, execution columns (#17): the best bid / ask emitted at the previous bar's
# close (0: none, or no bar emitted yet) and the open bar's taker volume at them and the
# first / last ts_recv of taker trades through them (-1 before any)
ST_PREV_BID = 21
ST_PREV_ASK = 22
ST_SELL_AT = 23
ST_SELL_THRU_FIRST = 24
ST_SELL_THRU_LAST = 25
ST_BUY_AT = 26
ST_BUY_THRU_FIRST = 27
ST_BUY_THRU_LAST = 28
ST_SIZE = 32

DESYNC_NONE = 0
DESYNC_UNKNOWN_LEVEL = 1
DESYNC_CROSSED = 2
DESYNC_BAD_SIZE = 3
DESYNC_REASONS = {
    DESYNC_UNKNOWN_LEVEL: "delete of an unknown level",
    DESYNC_CROSSED: "crossed book after a complete message",
    DESYNC_BAD_SIZE: "negative level size",
}


class DesyncError(RuntimeError):
    """The book cannot be trusted: unknown-level delete, negative size or crossed book."""


def new_state() -> np.ndarray:
    """A fresh scalar state vector (empty book, no bar open)."""
    st = np.zeros(ST_SIZE, dtype=np.int64)
    st[ST_LASTTR] = -1
    st[ST_LAST_TS] = -1
    for i in (ST_SELL_THRU_FIRST, ST_SELL_THRU_LAST, ST_BUY_THRU_FIRST, ST_BUY_THRU_LAST):
        st[i] = -1
    return st


def new_book(capacity: int = 64) -> np.ndarray:
    """An empty (4, capacity) book array."""
    return np.zeros((4, max(int(capacity), 4)), dtype=np.int64)


# ------------------------------------------------------------------ kernels
@njit(cache=True)
def _grow(book: np.ndarray) -> np.ndarray:
    cap = book.shape[1]
    out = np.zeros((4, cap * 2), dtype=np.int64)
    out[:, :cap] = book
    return out


@njit(cache=True)
def _search(book: np.ndarray, row: int, n: int, key: np.int64) -> int:
    """Leftmost insertion index of `key` in book[row, :n] (ascending).

    Galloping from the END (the best level): most deltas are near the touch, so the
    bracket is found in a few steps, then a binary search inside it; the same index as
    a binary search over the whole side."""
    if n == 0 or book[row, n - 1] < key:
        return n
    hi = n - 1  # book[row, hi] >= key
    step = 1
    lo = hi - step
    while lo >= 0 and book[row, lo] >= key:
        hi = lo
        step <<= 1
        lo = n - 1 - step
    lo = max(lo, -1) + 1  # book[row, lo - 1] < key (or lo == 0)
    while lo < hi:
        mid = (lo + hi) >> 1
        if book[row, mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _move_typer(typingctx, book, row, dst, src, count):  # type: ignore[no-untyped-def]
    """memmove of `count` items of row `row` of the 2-d C-contiguous `book`, from
    column `src` to column `dst` (the ranges may overlap): LLVM's memmove, which the
    shift loops did not become, on the row's data pointer (a slice view would cost two
    atomic reference counts per shift: 40 % of a replay)."""
    if not (isinstance(book, types.Array) and book.ndim == 2 and book.layout == "C"):
        return None
    sig = types.void(book, row, dst, src, count)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        arr, r, d, s, k = args
        aty, rty, dty, sty, kty = signature.args
        ary = context.make_array(aty)(context, builder, arr)
        shape = cgutils.unpack_tuple(builder, ary.shape, 2)
        strides = cgutils.unpack_tuple(builder, ary.strides, 2)
        r = context.cast(builder, r, rty, types.intp)
        d = context.cast(builder, d, dty, types.intp)
        s = context.cast(builder, s, sty, types.intp)
        k = context.cast(builder, k, kty, types.intp)

        def ptr(col):  # type: ignore[no-untyped-def]
            return cgutils.get_item_pointer2(
                context, builder, ary.data, shape, strides, aty.layout, [r, col]
            )

        item = context.get_abi_sizeof(context.get_data_type(aty.dtype))
        cgutils.raw_memmove(builder, ptr(d), ptr(s), k, item, 1)
        return context.get_dummy_value()

    return sig, codegen


_move: Any = intrinsic(_move_typer)


@njit(cache=True)
def _open_slot(book: np.ndarray, row: int, pos: int, n: int) -> None:
    """Move levels [pos, n) of one side (keys and sizes) up by one: room at `pos`."""
    if pos < n:
        _move(book, row, pos + 1, pos, n - pos)
        _move(book, row + 1, pos + 1, pos, n - pos)


@njit(cache=True)
def _close_slot(book: np.ndarray, row: int, pos: int, n: int) -> None:
    """Move levels (pos, n) of one side (keys and sizes) down by one over `pos`."""
    if pos < n - 1:
        _move(book, row, pos, pos + 1, n - 1 - pos)
        _move(book, row + 1, pos, pos + 1, n - 1 - pos)


@njit(cache=True)
def has_room(book: np.ndarray, st: np.ndarray, rows: int) -> bool:
    """Each side can take `rows` more levels (and one spare) without growing."""
    cap = book.shape[1]
    return st[ST_NB] + rows < cap and st[ST_NA] + rows < cap


@njit(cache=True)
def reserve(book: np.ndarray, st: np.ndarray, rows: int) -> np.ndarray:
    """The book with room for `rows` more levels on each side (doubled as needed)."""
    while not has_room(book, st, rows):
        book = _grow(book)
    return book


@njit(cache=True)
def apply_message_kernel(
    book: np.ndarray,
    st: np.ndarray,
    side: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    snap: np.ndarray,
    lo: int,
    hi: int,
) -> np.ndarray:
    """Apply rows [lo, hi) as ONE message; update desync counters and the OFI accumulator.

    Returns the book array (a new, larger one when a side had to grow).
    """
    if not has_room(book, st, hi - lo):
        book = reserve(book, st, hi - lo)
    apply_message(book, st, side, price, size, snap, lo, hi)
    return book


@njit(cache=True)
def apply_message(
    book: np.ndarray,
    st: np.ndarray,
    side: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    snap: np.ndarray,
    lo: int,
    hi: int,
) -> None:
    """`apply_message_kernel` in place, for a book with room for the message
    (`has_room(book, st, hi - lo)`): the hot loops check the room themselves and call
    this one, which never replaces the book.

    Each row's level update is written out in the loop (search, then set, delete or
    insert): as a function of its own (`_set_level`, as before) numba reference-counted
    the book and the state at every row, atomic operations that took more than a third
    of a replay; `_search`, `_open_slot` and `_close_slot` cost nothing of the kind."""
    nb0 = st[ST_NB]
    na0 = st[ST_NA]
    ok0 = st[ST_DESYNC] == 0 and nb0 > 0 and na0 > 0
    bp0 = np.int64(0)
    bq0 = np.int64(0)
    ap0 = np.int64(0)
    aq0 = np.int64(0)
    if ok0:
        bp0 = book[0, nb0 - 1]
        bq0 = book[1, nb0 - 1]
        ap0 = -book[2, na0 - 1]
        aq0 = book[3, na0 - 1]
    had_snapshot = False
    for i in range(lo, hi):
        if snap[i]:
            if st[ST_IN_SNAP] == 0:
                st[ST_NB] = 0
                st[ST_NA] = 0
                st[ST_DESYNC] = 0
                st[ST_N_SNAP] += 1
            st[ST_IN_SNAP] = 1
            had_snapshot = True
        else:
            st[ST_IN_SNAP] = 0
        q = size[i]
        if q < 0:
            st[ST_N_BADSIZE] += 1
            st[ST_DESYNC] = 1
            continue
        if side[i] > 0:
            row = 0
            ni = ST_NB
            key = price[i]
        else:
            row = 2
            ni = ST_NA
            key = -price[i]
        n = st[ni]
        pos = _search(book, row, n, key)
        if pos < n and book[row, pos] == key:
            if q > 0:
                book[row + 1, pos] = q
            else:
                _close_slot(book, row, pos, n)
                st[ni] = n - 1
        elif q == 0:
            st[ST_N_UNKNOWN] += 1
            st[ST_DESYNC] = 1
        else:
            _open_slot(book, row, pos, n)
            book[row, pos] = key
            book[row + 1, pos] = q
            st[ni] = n + 1
    nb = st[ST_NB]
    na = st[ST_NA]
    if nb > 0 and na > 0 and st[ST_DESYNC] == 0 and book[0, nb - 1] >= -book[2, na - 1]:
        st[ST_N_CROSSED] += 1
        st[ST_DESYNC] = 1
    st[ST_N_MSG] += 1
    if ok0 and not had_snapshot and st[ST_DESYNC] == 0 and nb > 0 and na > 0:
        bp = book[0, nb - 1]
        bq = book[1, nb - 1]
        ap = -book[2, na - 1]
        aq = book[3, na - 1]
        e = np.int64(0)
        if bp >= bp0:
            e += bq
        if bp <= bp0:
            e -= bq0
        if ap <= ap0:
            e -= aq
        if ap >= ap0:
            e += aq0
        st[ST_OFI] += e


@njit(cache=True)
def replay_kernel(
    book: np.ndarray,
    st: np.ndarray,
    ts: np.ndarray,
    side: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    snap: np.ndarray,
    first_desync_msg: np.ndarray,
) -> np.ndarray:
    """Apply every message of sorted canonical deltas; first_desync_msg[0] gets the row
    index where the first message that desynced the book starts (-1 if none)."""
    n = ts.shape[0]
    i = 0
    while i < n:
        j = i + 1
        while j < n and ts[j] == ts[i]:
            j += 1
        was = st[ST_DESYNC]
        before = st[ST_N_UNKNOWN] + st[ST_N_CROSSED] + st[ST_N_BADSIZE]
        if not has_room(book, st, j - i):
            book = reserve(book, st, j - i)
        apply_message(book, st, side, price, size, snap, i, j)
        after = st[ST_N_UNKNOWN] + st[ST_N_CROSSED] + st[ST_N_BADSIZE]
        if first_desync_msg[0] < 0 and (after > before or (was == 0 and st[ST_DESYNC] == 1)):
            first_desync_msg[0] = i
        i = j
    return book


# ------------------------------------------------------------------ Python API
@dataclass(frozen=True)
class BookCheck:
    """Result of replaying a canonical delta frame through the book."""

    n_rows: int
    n_messages: int
    n_snapshots: int
    n_unknown_level: int
    n_crossed: int
    n_bad_size: int
    first_desync_row: int  # -1 when the stream never desynced

    @property
    def n_desyncs(self) -> int:
        return self.n_unknown_level + self.n_crossed + self.n_bad_size

    @property
    def ok(self) -> bool:
        return self.n_desyncs == 0


class OrderBook:
    """Order book of one instrument in integer ticks and contracts.

    `apply_message` is the unit of change (one exchange message); `apply` is a
    one-row message. With ``strict=True`` a desync raises `DesyncError` (the state
    stays flagged either way; `desynced` tells, and the next snapshot clears it).
    """

    def __init__(self, capacity: int = 64, strict: bool = False) -> None:
        self._book = new_book(capacity)
        self._st = new_state()
        self.strict = strict

    # -------------------------------------------------- transitions
    def apply_message(
        self,
        sides: np.ndarray | list[int],
        prices: np.ndarray | list[int],
        sizes: np.ndarray | list[int],
        is_snapshot: bool | np.ndarray | list[bool] = False,
    ) -> int:
        """Apply one message; return the DESYNC_* code it caused (0 when none)."""
        s = np.ascontiguousarray(sides, dtype=np.int64)
        p = np.ascontiguousarray(prices, dtype=np.int64)
        q = np.ascontiguousarray(sizes, dtype=np.int64)
        if isinstance(is_snapshot, bool | np.bool_):
            f = np.full(s.shape[0], bool(is_snapshot))
        else:
            f = np.ascontiguousarray(is_snapshot, dtype=np.bool_)
        if not (s.shape == p.shape == q.shape == f.shape):
            raise ValueError("sides, prices, sizes and is_snapshot must have equal length")
        if s.shape[0] == 0:
            return DESYNC_NONE
        if np.any((s != 1) & (s != -1)):
            raise ValueError("side must be +1 (bid) or -1 (ask)")
        before = self._counts()
        self._book = apply_message_kernel(self._book, self._st, s, p, q, f, 0, s.shape[0])
        after = self._counts()
        code = DESYNC_NONE
        if after[2] > before[2]:
            code = DESYNC_BAD_SIZE
        elif after[0] > before[0]:
            code = DESYNC_UNKNOWN_LEVEL
        elif after[1] > before[1]:
            code = DESYNC_CROSSED
        if code and self.strict:
            raise DesyncError(DESYNC_REASONS[code])
        return code

    def apply(self, side: int, price_ticks: int, size: int, is_snapshot: bool = False) -> int:
        """Apply a single delta as its own message."""
        return self.apply_message([side], [price_ticks], [size], is_snapshot)

    def clear(self) -> None:
        """Empty the book and forget a desync (as a snapshot start does)."""
        self._st[ST_NB] = 0
        self._st[ST_NA] = 0
        self._st[ST_DESYNC] = 0
        self._st[ST_IN_SNAP] = 0

    def _counts(self) -> tuple[int, int, int]:
        st = self._st
        return int(st[ST_N_UNKNOWN]), int(st[ST_N_CROSSED]), int(st[ST_N_BADSIZE])

    def replay(
        self,
        ts_recv: np.ndarray,
        side: np.ndarray,
        price_ticks: np.ndarray,
        size: np.ndarray,
        is_snapshot: np.ndarray,
    ) -> int:
        """Apply canonical deltas (sorted by ts_recv), message by message, in the numba
        kernel; return the number of desyncs they caused (``strict`` is not applied)."""
        ts = np.ascontiguousarray(ts_recv, dtype=np.int64)
        if ts.shape[0] > 1 and np.any(np.diff(ts) < 0):
            raise ValueError("book deltas must be sorted by ts_recv")
        before = self.n_desyncs
        self._replay_sorted(ts, side, price_ticks, size, is_snapshot)
        return self.n_desyncs - before

    def _replay_sorted(
        self,
        ts: np.ndarray,
        side: np.ndarray,
        price_ticks: np.ndarray,
        size: np.ndarray,
        is_snapshot: np.ndarray,
    ) -> int:
        """`replay` of deltas known to be sorted; returns the row where the first message
        that desynced the book starts (-1 if none)."""
        first = np.full(1, -1, dtype=np.int64)
        self._book = replay_kernel(
            self._book,
            self._st,
            ts,
            np.ascontiguousarray(side, dtype=np.int64),
            np.ascontiguousarray(price_ticks, dtype=np.int64),
            np.ascontiguousarray(size, dtype=np.int64),
            np.ascontiguousarray(is_snapshot, dtype=np.bool_),
            first,
        )
        return int(first[0])

    # -------------------------------------------------- queries
    @property
    def desynced(self) -> bool:
        return bool(self._st[ST_DESYNC])

    @property
    def n_desyncs(self) -> int:
        return sum(self._counts())

    @property
    def ofi(self) -> int:
        """Accumulated CKS level-1 OFI since construction (contracts)."""
        return int(self._st[ST_OFI])

    def __len__(self) -> int:
        return int(self._st[ST_NB] + self._st[ST_NA])

    @property
    def is_ok(self) -> bool:
        """Both sides present, not crossed, not desynced."""
        return not self.desynced and self._st[ST_NB] > 0 and self._st[ST_NA] > 0

    def best_bid(self) -> tuple[int, int] | None:
        n = int(self._st[ST_NB])
        return None if n == 0 else (int(self._book[0, n - 1]), int(self._book[1, n - 1]))

    def best_ask(self) -> tuple[int, int] | None:
        n = int(self._st[ST_NA])
        return None if n == 0 else (int(-self._book[2, n - 1]), int(self._book[3, n - 1]))

    def levels(self, side: int) -> list[tuple[int, int]]:
        """All (price_ticks, size) of one side, best first."""
        if side > 0:
            n = int(self._st[ST_NB])
            return [(int(self._book[0, i]), int(self._book[1, i])) for i in range(n - 1, -1, -1)]
        n = int(self._st[ST_NA])
        return [(int(-self._book[2, i]), int(self._book[3, i])) for i in range(n - 1, -1, -1)]

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bid_px, bid_sz, ask_px, ask_sz), each int64 of length n, best first;
        missing levels are 0."""
        out = np.zeros((4, n), dtype=np.int64)
        nb = int(self._st[ST_NB])
        na = int(self._st[ST_NA])
        kb = min(n, nb)
        ka = min(n, na)
        out[0, :kb] = self._book[0, nb - kb : nb][::-1]
        out[1, :kb] = self._book[1, nb - kb : nb][::-1]
        out[2, :ka] = -self._book[2, na - ka : na][::-1]
        out[3, :ka] = self._book[3, na - ka : na][::-1]
        return out[0], out[1], out[2], out[3]


def check_book(
    ts_recv: np.ndarray,
    side: np.ndarray,
    price_ticks: np.ndarray,
    size: np.ndarray,
    is_snapshot: np.ndarray,
) -> BookCheck:
    """Replay canonical deltas (sorted by ts_recv) through a fresh book; count desyncs.

    Raises ValueError when ts_recv is not non-decreasing.
    """
    return check_book_pieces([(ts_recv, side, price_ticks, size, is_snapshot)])


def check_book_pieces(pieces: Iterable[Sequence[np.ndarray]]) -> BookCheck:
    """`check_book` of one delta stream given as consecutive pieces, each a tuple of
    (ts_recv, side, price_ticks, size, is_snapshot) holding whole messages (the rows of
    one ts_recv), so that a day of 20 M rows is checked holding one piece at a time.
    Same result as one `check_book` over the pieces joined (tested).

    Raises ValueError when ts_recv is not non-decreasing, or a message is split between
    two pieces (it would be applied as two)."""
    book = OrderBook(capacity=256)
    first = -1
    rows = 0
    last_ts: int | None = None
    for ts_recv, side, price_ticks, size, is_snapshot in pieces:
        ts = np.ascontiguousarray(ts_recv, dtype=np.int64)
        if ts.shape[0] == 0:
            continue
        if (ts.shape[0] > 1 and np.any(np.diff(ts) < 0)) or (
            last_ts is not None and ts[0] < last_ts
        ):
            raise ValueError("book deltas must be sorted by ts_recv")
        if last_ts is not None and ts[0] == last_ts:
            raise ValueError(f"a message (ts_recv {last_ts}) is split between two pieces")
        at = book._replay_sorted(ts, side, price_ticks, size, is_snapshot)
        if first < 0 <= at:
            first = rows + at
        rows += ts.shape[0]
        last_ts = int(ts[-1])
    st = book._st
    return BookCheck(
        n_rows=rows,
        n_messages=int(st[ST_N_MSG]),
        n_snapshots=int(st[ST_N_SNAP]),
        n_unknown_level=int(st[ST_N_UNKNOWN]),
        n_crossed=int(st[ST_N_CROSSED]),
        n_bad_size=int(st[ST_N_BADSIZE]),
        first_desync_row=first,
    )


#: rows of a day's book handed to a kernel at a time (`message_bounds`, the sampler's
#: `feed`): a piece's columns as numpy take ~30 MB, a whole day's ~0.5 GB (#19)
PIECE_ROWS = 1 << 20


def message_bounds(ts_recv: pl.Series, rows: int = PIECE_ROWS) -> Iterator[tuple[int, int]]:
    """Row ranges ``[start, end)`` covering `ts_recv` (sorted) in order, about `rows` rows
    each, every one ending at a message boundary (a message: the rows of one ts_recv; one
    longer than `rows` is a range of its own): the pieces `check_book_pieces` takes a
    day in. Unsorted input still gets ranges covering it (the check refuses it)."""
    start, n = 0, ts_recv.len()
    while start < n:
        end = min(start + rows, n)
        if end < n:  # back to where the message at the cut starts (or on to its end)
            at = ts_recv[end]
            cut = int(ts_recv.search_sorted(at, side="left"))
            if cut <= start:
                cut = int(ts_recv.search_sorted(at, side="right"))
            end = cut if start < cut <= n else end
        yield start, end
        start = end
