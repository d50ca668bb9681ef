"""Order book state machine: hand-computed cases and Hypothesis properties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from book.order_book import (
    DESYNC_BAD_SIZE,
    DESYNC_CROSSED,
    DESYNC_NONE,
    DESYNC_UNKNOWN_LEVEL,
    DesyncError,
    OrderBook,
    _search,
    check_book,
)


def _snap(book: OrderBook) -> None:
    book.apply_message([1, 1, -1, -1], [100, 99, 101, 102], [5, 6, 7, 8], True)


def test_book_snapshot_then_top_orders_levels_best_first() -> None:
    b = OrderBook()
    _snap(b)
    bp, bs, ap, az = b.top(3)
    assert bp.tolist() == [100, 99, 0] and bs.tolist() == [5, 6, 0]
    assert ap.tolist() == [101, 102, 0] and az.tolist() == [7, 8, 0]
    assert b.best_bid() == (100, 5) and b.best_ask() == (101, 7)
    assert b.is_ok and not b.desynced


def test_book_update_insert_and_delete_change_levels() -> None:
    b = OrderBook()
    _snap(b)
    assert b.apply(1, 99, 10) == DESYNC_NONE  # update
    assert b.apply(-1, 103, 4) == DESYNC_NONE  # insert deep
    assert b.apply(1, 100, 0) == DESYNC_NONE  # delete best bid
    assert b.levels(1) == [(99, 10)]
    assert b.levels(-1) == [(101, 7), (102, 8), (103, 4)]


def test_book_delete_of_unknown_level_reports_desync() -> None:
    b = OrderBook()
    _snap(b)
    assert b.apply(1, 90, 0) == DESYNC_UNKNOWN_LEVEL
    assert b.desynced and not b.is_ok


def test_book_update_for_unknown_level_raises_desync_when_strict() -> None:
    b = OrderBook(strict=True)
    _snap(b)
    try:
        b.apply(-1, 150, 0)
    except DesyncError as exc:
        assert "unknown level" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("no DesyncError")


def test_book_crossed_after_message_is_desync_but_transient_cross_inside_message_is_not() -> None:
    b = OrderBook()
    _snap(b)
    # one message: the best ask is removed and a bid is placed at its price -> not crossed after
    assert b.apply_message([-1, 1], [101, 101], [0, 3]) == DESYNC_NONE
    assert b.best_bid() == (101, 3) and b.best_ask() == (102, 8)
    assert b.apply(1, 102, 1) == DESYNC_CROSSED
    assert b.desynced


def test_book_negative_size_is_desync() -> None:
    b = OrderBook()
    _snap(b)
    assert b.apply(1, 100, -1) == DESYNC_BAD_SIZE


def test_book_snapshot_resets_book_and_clears_desync() -> None:
    b = OrderBook()
    _snap(b)
    b.apply(1, 102, 1)
    assert b.desynced
    b.apply_message([1, -1], [50, 60], [1, 2], True)
    assert not b.desynced
    assert b.levels(1) == [(50, 1)] and b.levels(-1) == [(60, 2)]


def test_book_consecutive_snapshot_messages_extend_not_reset() -> None:
    b = OrderBook()
    b.apply_message([1], [10], [1], True)
    b.apply_message([-1], [12], [1], True)  # same snapshot run, next message
    assert b.levels(1) == [(10, 1)] and b.levels(-1) == [(12, 1)]


def test_book_ofi_matches_cont_kukanov_stoikov_hand_computed() -> None:
    b = OrderBook()
    _snap(b)  # bid 100x5, ask 101x7
    b.apply(1, 100, 9)  # bid queue +4 at same price: e = 9 - 5 = 4
    assert b.ofi == 4
    b.apply(-1, 101, 0)  # ask moves up to 102x8: e = +7 (old ask queue)
    assert b.ofi == 11
    b.apply(1, 101, 2)  # bid improves to 101x2: e = +2
    assert b.ofi == 13


def test_book_grows_beyond_initial_capacity() -> None:
    b = OrderBook(capacity=4)
    n = 500
    b.apply_message([1] * n + [-1] * n, list(range(n)) + list(range(n, 2 * n)), [1] * (2 * n), True)
    assert len(b) == 2 * n
    assert b.best_bid() == (n - 1, 1) and b.best_ask() == (n, 1)


def test_check_book_counts_messages_and_first_desync_row() -> None:
    ts = np.array([1, 1, 2, 3, 3])
    side = np.array([1, -1, 1, -1, -1])
    px = np.array([10, 11, 9, 40, 11])
    sz = np.array([1, 1, 0, 0, 2])
    snap = np.array([True, True, False, False, False])
    res = check_book(ts, side, px, sz, snap)
    assert res.n_messages == 3 and res.n_snapshots == 1
    assert res.n_unknown_level == 2 and res.first_desync_row == 2
    assert not res.ok


def test_check_book_unsorted_raises() -> None:
    try:
        check_book(
            np.array([2, 1]),
            np.array([1, -1]),
            np.array([1, 2]),
            np.array([1, 1]),
            np.array([True, True]),
        )
    except ValueError as exc:
        assert "sorted" in str(exc)
    else:  # pragma: no cover
        raise AssertionError


# ------------------------------------------------------------------ properties
class _Reference:
    """Straightforward dict book used only to cross-check the kernel."""

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


@st.composite
def valid_streams(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """Random valid single-delta messages that never cross (generated against a model)."""
    ref = _Reference()
    mid = 1000
    out: list[tuple[int, int, int]] = []
    for _ in range(draw(st.integers(1, 120))):
        side = draw(st.sampled_from([1, -1]))
        levels = ref.bids if side == 1 else ref.asks
        action = draw(st.sampled_from(["set", "set", "delete"]))
        if action == "delete" and levels:
            px = draw(st.sampled_from(sorted(levels)))
            del levels[px]
            out.append((side, px, 0))
            continue
        best_other = (
            min(ref.asks)
            if side == 1 and ref.asks
            else (max(ref.bids) if side == -1 and ref.bids else None)
        )
        if side == 1:
            hi = (best_other - 1) if best_other is not None else mid + 20
            px = draw(st.integers(hi - 30, hi))
        else:
            lo = (best_other + 1) if best_other is not None else mid - 20
            px = draw(st.integers(lo, lo + 30))
        sz = draw(st.integers(1, 1000))
        levels[px] = sz
        out.append((side, px, sz))
    return out


@settings(max_examples=60, deadline=None)
@given(stream=valid_streams())
def test_book_random_valid_streams_never_cross_and_match_reference(
    stream: list[tuple[int, int, int]],
) -> None:
    b = OrderBook(capacity=4, strict=True)
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for side, px, sz in stream:
        b.apply(side, px, sz)
        d = bids if side == 1 else asks
        if sz:
            d[px] = sz
        else:
            d.pop(px)
        bb, ba = b.best_bid(), b.best_ask()
        if bb and ba:
            assert bb[0] < ba[0]
    assert b.levels(1) == sorted(bids.items(), reverse=True)
    assert b.levels(-1) == sorted(asks.items())


@settings(max_examples=40, deadline=None)
@given(
    stream=valid_streams(),
    snap=st.lists(
        st.tuples(st.integers(1, 50), st.integers(1, 9)),
        min_size=1,
        max_size=10,
        unique_by=lambda t: t[0],
    ),
)
def test_book_snapshot_resets_whatever_came_before(
    stream: list[tuple[int, int, int]], snap: list[tuple[int, int]]
) -> None:
    b = OrderBook()
    for side, px, sz in stream:
        b.apply(side, px, sz)
    b.apply(1, 10**6, 0)  # force a desync too
    bids = [(px, sz) for px, sz in snap]
    asks = [(px + 100, sz) for px, sz in snap]
    b.apply_message(
        [1] * len(bids) + [-1] * len(asks),
        [p for p, _ in bids + asks],
        [s for _, s in bids + asks],
        True,
    )
    assert not b.desynced
    assert b.levels(1) == sorted(bids, reverse=True)
    assert b.levels(-1) == sorted(asks)


def test_book_replay_equals_message_by_message_and_counts_desyncs() -> None:
    ts = np.array([1, 1, 1, 2, 3, 3, 4])
    side = np.array([1, 1, -1, 1, -1, -1, 1])
    px = np.array([10, 9, 12, 11, 12, 13, 50])
    sz = np.array([1, 2, 3, 4, 0, 6, 0])
    snap = np.array([True, True, True, False, False, False, False])
    a = OrderBook()
    assert a.replay(ts, side, px, sz, snap) == 1  # the delete of unknown level 50
    b = OrderBook()
    for t in np.unique(ts):
        m = ts == t
        b.apply_message(side[m], px[m], sz[m], snap[m])
    assert a.levels(1) == b.levels(1) == [(11, 4), (10, 1), (9, 2)]
    assert a.levels(-1) == b.levels(-1) == [(13, 6)]
    assert a.ofi == b.ofi


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.integers(-50, 50), max_size=40, unique=True),
    spare=st.integers(0, 5),
    key=st.integers(-60, 60),
)
def test_search_from_the_best_end_equals_a_leftmost_binary_search(
    keys: list[int], spare: int, key: int
) -> None:
    """`_search` gallops from the end (the best level); it must give the leftmost
    insertion index of a binary search over the used part, whatever lies beyond it."""
    n = len(keys)
    book = np.full((4, n + spare + 1), 10**6, dtype=np.int64)
    book[0, :n] = sorted(keys)
    assert _search(book, 0, n, np.int64(key)) == int(np.searchsorted(book[0, :n], key, "left"))


def test_book_deep_inserts_and_deletes_keep_levels_and_sizes_paired() -> None:
    """Inserts and deletes far from the touch move keys and sizes together (memmove)."""
    rng = np.random.default_rng(3)
    book = OrderBook(capacity=4)
    ref: dict[int, int] = {}
    for _ in range(3000):
        px = int(rng.integers(1, 400))
        size = 0 if (px in ref and rng.random() < 0.5) else int(rng.integers(1, 9))
        if size == 0 and px not in ref:
            continue
        book.apply(1, px, size)
        if size:
            ref[px] = size
        else:
            ref.pop(px)
    assert book.levels(1) == sorted(ref.items(), reverse=True)
    assert not book.desynced
