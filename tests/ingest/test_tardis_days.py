"""The realistic-density tardis day generator (bench/tardis_days.py, #19): a scaled-down
day has the real capture's message mix, reads back through the tardis reader with every
row kept, and replays through the one order book without a desync."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bench.tardis_days import MIX, generate_days, write_day
from book.order_book import check_book
from core import schema
from ingest.instruments import load_instrument
from ingest.tardis import read_tardis
from ingest.ws_recording import read_ws_recording


def message_mix(book: pl.DataFrame) -> dict[str, float]:
    """Share of insert (new level), update (existing level) and delete (size 0) among
    the non-snapshot rows of a canonical book, replayed from its snapshot."""
    levels: set[tuple[int, int]] = set()
    n = {"insert": 0, "update": 0, "delete": 0}
    for side, px, size, snap in book.select(
        schema.SIDE, schema.PRICE_TICKS, schema.SIZE, schema.IS_SNAPSHOT
    ).iter_rows():
        key = (side, px)
        if snap:
            levels.add(key)
            continue
        if size == 0:
            n["delete"] += 1
            levels.discard(key)
        elif key in levels:
            n["update"] += 1
        else:
            n["insert"] += 1
            levels.add(key)
    total = sum(n.values())
    return {k: v / total for k, v in n.items()}


@pytest.fixture(scope="module")
def capture_mix(ws_capture: Path, instruments_json: Path) -> dict[str, float]:
    inst = load_instrument(instruments_json, "XBTUSD")
    fr = read_ws_recording(ws_capture, "XBTUSD", inst)
    return message_mix(fr.book)


def test_scaled_day_has_the_capture_mix_and_reads_back(
    tmp_path: Path, capture_mix: dict[str, float], instruments_json: Path
) -> None:
    inst = load_instrument(instruments_json, "XBTUSD")
    assert inst.tick_size == 0.5
    (day,) = generate_days(1, "2019-03-01", seed=3, book_rows=60_000, trades=3_000)
    book_path, trades_path = write_day(day, tmp_path)
    fb = read_tardis(book_path, "XBTUSD", inst)
    ft = read_tardis(trades_path, "XBTUSD", inst)
    assert fb.ok and ft.ok
    assert fb.rows_in == day.book.height == fb.rows_out  # every row kept, none rejected
    assert ft.rows_in == day.trades.height == ft.rows_out
    assert 55_000 < fb.rows_in < 65_000 and 2_500 < ft.rows_in < 3_500
    assert fb.book[schema.IS_SNAPSHOT][0] and fb.book[schema.TS_RECV].is_sorted()
    chk = check_book(*(fb.book[c].to_numpy() for c in (
        schema.TS_RECV, schema.SIDE, schema.PRICE_TICKS, schema.SIZE, schema.IS_SNAPSHOT
    )))  # fmt: skip
    assert chk.ok, chk
    mix = message_mix(fb.book)
    for k in ("insert", "update", "delete"):
        assert abs(mix[k] - capture_mix[k]) < 0.03, (k, mix, capture_mix)
        assert abs(capture_mix[k] - MIX[k]) < 0.005  # the constants are the capture's
    assert int(ft.trades[schema.SIZE].min()) >= 100  # type: ignore[arg-type]  # whole lots
    assert ft.trade_ids is not None and ft.trade_ids.n_unique() == ft.rows_in


def test_days_are_deterministic_and_continuous() -> None:
    a = list(generate_days(2, seed=5, book_rows=20_000, trades=500))
    b = list(generate_days(2, seed=5, book_rows=20_000, trades=500))
    for x, y in zip(a, b, strict=True):
        assert x.book.equals(y.book) and x.trades.equals(y.trades)
    # the second day opens with a snapshot of the book the first day ended with
    d1 = a[1].book.filter(pl.col("is_snapshot"))
    bids = d1.filter(pl.col("side") > 0)["price_ticks"].to_numpy()
    last_book = a[0].book.filter(~pl.col("is_snapshot"))
    assert bids.size > 1000 and np.all(np.diff(bids) < 0)  # best first, full depth
    assert abs(int(bids[0]) - int(last_book["price_ticks"].median())) < 5_000  # type: ignore[arg-type]
