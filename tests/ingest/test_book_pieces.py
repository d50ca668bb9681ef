"""A day's book checked piece by piece (#19: a 20 M row day without 0.6 GB of numpy
copies) gives exactly the whole-day check, desyncs and their first row included."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from book.order_book import OrderBook, check_book, check_book_pieces
from ingest.events import book_schema
from ingest.run import BOOK_REPLAY_COLUMNS, book_check, message_pieces


def _stream(seed: int, n_msgs: int = 400) -> pl.DataFrame:
    """A snapshot, then messages of 1-5 rows (equal ts_recv) updating, deleting and
    sometimes deleting unknown levels or crossing the book (desyncs), with a second
    snapshot half way."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int, int, int, int, bool]] = []
    ts = 1_000

    def snapshot() -> None:
        for k in range(5):
            rows.append((ts, ts, 1, 100 - k, 10 + k, True))
            rows.append((ts, ts, -1, 101 + k, 10 + k, True))

    snapshot()
    for m in range(n_msgs):
        ts += int(rng.integers(1, 4))
        if m == n_msgs // 2:
            snapshot()
            continue
        for _ in range(int(rng.integers(1, 6))):
            side = int(rng.choice([1, -1]))
            price = int(rng.integers(90, 111))  # sometimes through the other side
            size = int(rng.choice([0, 0, 1, 5, 20]))  # 0: delete (maybe an unknown level)
            rows.append((ts, ts, side, price, size, False))
    return pl.DataFrame(rows, schema=book_schema(), orient="row")


def _whole(book: pl.DataFrame):
    return check_book(*(book[c].to_numpy() for c in BOOK_REPLAY_COLUMNS))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("rows", [1, 2, 7, 64, 10_000])
def test_pieces_hold_whole_messages_and_check_as_the_whole_day(seed: int, rows: int) -> None:
    book = _stream(seed)
    whole = _whole(book)
    assert whole.n_desyncs > 0 and whole.first_desync_row > 0  # the stream does desync
    pieces = list(message_pieces(book, rows))
    ts = [p[0] for p in pieces]
    assert sum(len(t) for t in ts) == book.height
    assert all(a[-1] < b[0] for a, b in zip(ts, ts[1:], strict=False))  # no message cut
    for t in ts:  # at most `rows` rows, unless the piece is one message longer than that
        assert len(t) <= rows or (t == t[0]).all()
    assert check_book_pieces(pieces) == whole
    chk = book_check(book)
    assert (chk["messages"], chk["first_desync_row"]) == (whole.n_messages, whole.first_desync_row)


def test_pieces_of_the_book_at_end_match_one_replay() -> None:
    book = _stream(4)
    one = OrderBook()
    one.replay(*(book[c].to_numpy() for c in BOOK_REPLAY_COLUMNS))
    piecewise = OrderBook()
    for piece in message_pieces(book, 3):
        piecewise.replay(*piece)
    assert piecewise.levels(1) == one.levels(1) and piecewise.levels(-1) == one.levels(-1)
    assert piecewise.n_desyncs == one.n_desyncs


def test_check_book_pieces_refuses_a_split_message_and_disorder() -> None:
    a = (
        np.array([1, 2]),
        np.array([1, -1]),
        np.array([10, 11]),
        np.array([1, 1]),
        np.array([True, True]),
    )
    split = (np.array([2]), np.array([1]), np.array([9]), np.array([1]), np.array([False]))
    back = (np.array([1]), np.array([1]), np.array([9]), np.array([1]), np.array([False]))
    with pytest.raises(ValueError, match="split"):
        check_book_pieces([a, split])
    with pytest.raises(ValueError, match="sorted"):
        check_book_pieces([a, back])
