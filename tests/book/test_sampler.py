"""Sampler: hand-computed bars, the contract on messages/snapshots, the execution columns
of #17, batch == streaming == resumable."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from book.sampler import BarSampler, ResumableSampler, sample_bars
from core import schema
from core.config.features import FeatureSpec

S = 1_000_000_000
SPEC = FeatureSpec(interval_ms=1000, depth=10)


def _book(rows: list[tuple[int, int, int, int, bool]]) -> pl.DataFrame:
    ts, side, px, sz, snap = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [])
    )
    return pl.DataFrame(
        {
            "ts_event": ts,
            "ts_recv": ts,
            "side": side,
            "price_ticks": px,
            "size": sz,
            "is_snapshot": snap,
        },
        schema={
            "ts_event": pl.Int64,
            "ts_recv": pl.Int64,
            "side": pl.Int8,
            "price_ticks": pl.Int64,
            "size": pl.Int64,
            "is_snapshot": pl.Boolean,
        },
    )


def _trades(rows: list[tuple[int, int, int, int]]) -> pl.DataFrame:
    ts, side, px, sz = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
    return pl.DataFrame(
        {"ts_event": ts, "ts_recv": ts, "side": side, "price_ticks": px, "size": sz},
        schema={
            "ts_event": pl.Int64,
            "ts_recv": pl.Int64,
            "side": pl.Int8,
            "price_ticks": pl.Int64,
            "size": pl.Int64,
        },
    )


SNAP = [
    (S // 2, 1, 100, 5, True),
    (S // 2, 1, 99, 6, True),
    (S // 2, -1, 101, 7, True),
    (S // 2, -1, 102, 8, True),
]


def test_sample_bars_hand_computed_rows() -> None:
    book = _book([*SNAP, (2 * S, 1, 100, 9, False), (int(2.5 * S), -1, 101, 0, False)])
    trades = _trades(
        [(int(1.2 * S), 1, 101, 3), (2 * S, -1, 100, 2), (int(1.9 * S), -1, 99, 4)][:1]
        + [(int(1.9 * S), -1, 99, 4), (2 * S, -1, 100, 2)]
    )
    bars = sample_bars(book, trades, SPEC)
    assert bars.columns == schema.bar_columns(10)
    assert bars["ts"].to_list() == [S, 2 * S, 3 * S]
    assert bars["book_ok"].to_list() == [True, True, True]
    # bar (1s, 2s]: the delta at exactly 2s belongs to it (ts_recv <= t)
    assert bars["bid_sz_0"].to_list() == [5, 9, 9]
    assert bars["ask_px_0"].to_list() == [101, 101, 102]
    assert bars["n_book_events"].to_list() == [4, 1, 1]
    assert bars["ofi_l1"].to_list() == [0, 4, 7]  # snapshot adds 0; 9-5; old ask queue 7
    assert bars["buy_vol"].to_list() == [0, 3, 0]
    assert bars["sell_vol"].to_list() == [0, 6, 0]
    assert bars["n_trades"].to_list() == [0, 3, 0]
    assert bars["buy_hi_ticks"].to_list() == [0, 101, 0]
    assert bars["sell_lo_ticks"].to_list() == [0, 99, 0]
    assert bars["last_trade_ts"].to_list() == [-1, 2 * S, 2 * S]
    assert bars["bid_px_2"].to_list() == [0, 0, 0]


def test_sample_bars_starts_at_first_complete_book_and_carries_empty_intervals() -> None:
    book = _book(
        [
            (S // 2, 1, 100, 5, True),
            (int(2.2 * S), -1, 101, 1, False),
            (int(5.5 * S), 1, 100, 1, False),
        ]
    )
    bars = sample_bars(book, _trades([]), SPEC)
    assert bars["ts"].to_list() == [3 * S, 4 * S, 5 * S, 6 * S]
    assert bars["bid_sz_0"].to_list() == [5, 5, 5, 1]
    assert bars["n_book_events"].to_list() == [1, 0, 0, 1]


def test_sample_bars_desync_marks_book_not_ok_until_next_snapshot() -> None:
    book = _book(
        [
            *SNAP,
            (int(1.5 * S), 1, 101, 1, False),
            (int(2.5 * S), 1, 100, 1, True),
            (int(2.5 * S), -1, 103, 1, True),
        ]
    )
    bars = sample_bars(book, _trades([]), SPEC)
    assert bars["book_ok"].to_list() == [True, False, True]
    assert bars["ask_px_0"].to_list()[-1] == 103 and bars["bid_px_1"].to_list()[-1] == 0


def test_sample_bars_unsorted_input_raises() -> None:
    book = _book([(2 * S, 1, 1, 1, True), (S, -1, 2, 1, True)])
    try:
        sample_bars(book, _trades([]), SPEC)
    except ValueError as exc:
        assert "sorted" in str(exc)
    else:  # pragma: no cover
        raise AssertionError


def test_sample_bars_empty_input_gives_empty_frame_with_columns() -> None:
    bars = sample_bars(_book([]), _trades([]), SPEC)
    assert bars.height == 0 and bars.columns == schema.bar_columns(10)


def _ms(x: float) -> int:
    return int(round(x * 1000)) * (S // 1000)


EXEC_BOOK = [
    *SNAP,  # 0.5 s: bids 100 x 5, 99 x 6; asks 101 x 7, 102 x 8
    (_ms(1.5), 1, 100, 0, False),  # best bid 100 -> 99 inside bar 2
    (_ms(2.3), -1, 101, 0, False),  # best ask 101 -> 102 inside bar 3
    (_ms(3.5), 1, 98, 2, False),  # bar 4: a book change, no trade
    (_ms(5.2), 1, 99, 0, False),  # bar 6: no bid left ...
    (_ms(5.3), 1, 98, 0, False),  # ... (book not ok at its close)
    (_ms(6.8), 1, 97, 1, False),  # bar 7: a bid again
]
EXEC_TRADES = [
    (_ms(0.7), -1, 100, 2),  # bar 1 (the first): at the best bid, but no previous close
    (_ms(0.8), 1, 102, 1),  # ... and through the ask: still 0 / -1
    (_ms(1.1), -1, 100, 3),  # bar 2, reference bid 100 / ask 101: sell at
    (_ms(1.2), 1, 101, 5),  # buy at
    (_ms(1.3), -1, 99, 4),  # sell through (first)
    (_ms(1.4), 1, 102, 1),  # buy through (first and last)
    (_ms(1.6), -1, 100, 1),  # sell at (the book's best is 99 now: the reference stays 100)
    (_ms(1.8), -1, 99, 2),  # sell through (last): at the book's best, below the reference
    (2 * S, 1, 101, 2),  # at exactly the close: bar 2's, buy at
    (_ms(2.2), -1, 99, 6),  # bar 3, reference bid 99 (the best moved) / ask 101: sell at
    (_ms(2.5), -1, 100, 3),  # above the reference bid: neither at nor through
    (_ms(2.6), 1, 103, 4),  # buy through (ask 102 now, the reference is still 101)
    (_ms(4.5), 1, 102, 3),  # bar 5 (bar 4 had no trade), reference bid 99 / ask 102: at
    (_ms(4.6), 1, 101, 1),  # below the reference ask: neither
    (_ms(4.7), -1, 97, 1),  # sell through
    (_ms(6.5), -1, 90, 9),  # bar 7: bar 6 closed with no bid: 0 / -1
    (_ms(6.6), 1, 102, 2),  # buy at (bar 6's ask 102)
]
EXEC_COLS = list(schema.QUEUE_COLUMNS)


def test_execution_columns_hand_computed() -> None:
    bars = sample_bars(_book(EXEC_BOOK), _trades(EXEC_TRADES), SPEC)
    assert bars["ts"].to_list() == [k * S for k in range(1, 8)]
    assert bars["bid_px_0"].to_list() == [100, 99, 99, 99, 99, 0, 97]
    assert bars["ask_px_0"].to_list() == [101, 101, 102, 102, 102, 102, 102]
    assert bars["book_ok"].to_list() == [True] * 5 + [False, True]
    assert (
        schema.bar_columns(10)[-6:]
        == EXEC_COLS
        == list(schema.EXEC_COLUMNS[-6:])
        == [
            "sell_at_bid_vol",
            "sell_thru_bid_first_ts",
            "sell_thru_bid_last_ts",
            "buy_at_ask_vol",
            "buy_thru_ask_first_ts",
            "buy_thru_ask_last_ts",
        ]
    )
    want = [  # per bar: the six columns, in EXEC_COLS order
        (0, -1, -1, 0, -1, -1),
        (4, _ms(1.3), _ms(1.8), 7, _ms(1.4), _ms(1.4)),
        (6, -1, -1, 0, _ms(2.6), _ms(2.6)),
        (0, -1, -1, 0, -1, -1),
        (0, _ms(4.7), _ms(4.7), 3, -1, -1),
        (0, -1, -1, 0, -1, -1),
        (0, -1, -1, 2, -1, -1),
    ]
    assert bars.select(EXEC_COLS).rows() == want
    for c in EXEC_COLS:
        assert bars.schema[c] == pl.Int64


def _streamed(
    book: pl.DataFrame, trades: pl.DataFrame, spec: FeatureSpec, cuts: list[int]
) -> pl.DataFrame:
    """`BarSampler` fed event by event, `advance` at each cut before the next event."""
    sampler = BarSampler(spec)
    events = [(r[1], 0, r) for r in book.iter_rows()] + [(r[1], 1, r) for r in trades.iter_rows()]
    events.sort(key=lambda e: (e[0], e[1]))  # stable: book rows keep their order
    rows: list[dict] = []
    ci = 0
    for ts, kind, r in events:
        while ci < len(cuts) and cuts[ci] < ts:
            rows += sampler.advance(cuts[ci])
            ci += 1
        if kind == 0:
            sampler.on_book(r[1], r[2], r[3], r[4], r[5])
        else:
            sampler.on_trade(r[1], r[2], r[3], r[4])
    last = max(book["ts_recv"].max() or 0, trades["ts_recv"].max() if trades.height else 0)
    rows += sampler.advance(-(-int(last) // spec.interval_ns) * spec.interval_ns)
    schema_ = {
        c: (pl.Boolean if c == "book_ok" else pl.Int64) for c in schema.bar_columns(spec.depth)
    }
    return pl.DataFrame(rows, schema=schema_) if rows else pl.DataFrame(schema=schema_)


def _resumed(
    book: pl.DataFrame, trades: pl.DataFrame, spec: FeatureSpec, cuts: list[int]
) -> pl.DataFrame:
    """`ResumableSampler` fed the events in chunks ending at each cut (closing the bars up
    to it), its state saved and restored between chunks, then finished."""
    last = max(book["ts_recv"].max() or 0, trades["ts_recv"].max() if trades.height else 0)
    s = ResumableSampler(spec)
    parts = []
    lo = None
    for c in [*(c for c in cuts if c < last), None]:

        def chunk(df: pl.DataFrame, c: int | None = c, lo: int | None = lo) -> pl.DataFrame:
            keep = pl.lit(True)
            if lo is not None:
                keep = keep & (pl.col("ts_recv") > lo)
            if c is not None:
                keep = keep & (pl.col("ts_recv") <= c)
            return df.filter(keep)

        s = ResumableSampler.from_state(spec, s.state())  # as across processes
        parts.append(s.feed(chunk(book), chunk(trades), int(last) if c is None else c))
        lo = c
    parts.append(s.finish(int(last)))
    return pl.concat(parts)


@pytest.mark.parametrize(
    "cuts",
    [
        [],
        [_ms(1.35)],
        [_ms(0.6), _ms(1.45), _ms(1.45), _ms(2.4), _ms(4.55), _ms(6.55)],
        [2 * S, 4 * S],
    ],
    ids=["none", "mid-bar", "many", "at-closes"],
)
def test_execution_columns_batch_equals_streaming_equals_resumable(cuts: list[int]) -> None:
    book, trades = _book(EXEC_BOOK), _trades(EXEC_TRADES)
    batch = sample_bars(book, trades, SPEC)
    assert _streamed(book, trades, SPEC, cuts).equals(batch)
    assert _resumed(book, trades, SPEC, cuts).equals(batch)


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, list[int]]:
    t = draw(st.integers(0, 3 * S))
    rows: list[tuple[int, int, int, int, bool]] = []
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for i in range(draw(st.integers(1, 4))):
        bids[100 - i] = draw(st.integers(1, 50))
        asks[101 + i] = draw(st.integers(1, 50))
    rows += [(t, 1, p, q, True) for p, q in bids.items()] + [
        (t, -1, p, q, True) for p, q in asks.items()
    ]
    trades: list[tuple[int, int, int, int]] = []
    for _ in range(draw(st.integers(0, 60))):
        t += draw(st.sampled_from([0, 1, 10**6, S // 3, S, 4 * S]))
        kind = draw(st.sampled_from(["book", "book", "trade", "snap"]))
        if kind == "trade":
            trades.append(
                (
                    t,
                    draw(st.sampled_from([1, -1])),
                    draw(st.integers(95, 106)),
                    draw(st.integers(1, 9)),
                )
            )
            continue
        if kind == "snap":
            rows += [(t, 1, 99, 3, True), (t, -1, 102, 4, True)]
            continue
        side = draw(st.sampled_from([1, -1]))
        px = draw(st.integers(90, 112))
        sz = draw(st.integers(0, 20))
        rows.append((t, side, px, sz, False))  # may desync: both paths must agree anyway
    cuts = sorted(draw(st.lists(st.integers(0, t + 2 * S), max_size=6)))
    return _book(rows), _trades(trades), cuts


@settings(max_examples=40, deadline=None)
@given(data=event_streams(), interval_ms=st.sampled_from([1, 250, 1000, 3000]))
def test_streaming_and_resumable_bars_equal_batch(
    data: tuple[pl.DataFrame, pl.DataFrame, list[int]], interval_ms: int
) -> None:
    book, trades, cuts = data
    spec = FeatureSpec(interval_ms=interval_ms, depth=10)
    batch = sample_bars(book, trades, spec)
    assert _streamed(book, trades, spec, cuts).equals(batch)
    assert _resumed(book, trades, spec, cuts).equals(batch)
    assert (batch["sell_at_bid_vol"] <= batch["sell_vol"]).all()
    assert (batch["buy_at_ask_vol"] <= batch["buy_vol"]).all()
    for c in schema.THRU_TS_COLUMNS:
        t = batch[c]
        assert ((t == -1) | ((t > batch["ts"] - spec.interval_ns) & (t <= batch["ts"]))).all(), c
    ok = batch.filter(pl.col("book_ok"))
    assert (ok["bid_px_0"] < ok["ask_px_0"]).all()
    assert np.all(np.diff(batch["ts"].to_numpy()) == spec.interval_ns)


@settings(max_examples=40, deadline=None)
@given(
    data=event_streams(),
    interval_ms=st.sampled_from([1, 250, 1000]),
    piece_rows=st.sampled_from([1, 2, 3, 7]),
)
def test_feeding_in_pieces_of_whole_messages_gives_the_batch_bars(
    data: tuple[pl.DataFrame, pl.DataFrame, list[int]], interval_ms: int, piece_rows: int
) -> None:
    """#19: a day's book goes to the kernel a piece of whole messages at a time, each
    with the trades before the next piece; the bars are bit for bit the batch's."""
    book, trades, _ = data
    spec = FeatureSpec(interval_ms=interval_ms, depth=10)
    last = max(book["ts_recv"].max() or 0, trades["ts_recv"].max() if trades.height else 0)
    s = ResumableSampler(spec)
    pieced = pl.concat([s.feed(book, trades, int(last), piece_rows), s.finish(int(last))])
    assert pieced.equals(sample_bars(book, trades, spec))


def test_feeding_in_pieces_keeps_a_trade_at_a_bar_close_in_that_bar() -> None:
    """The piece before a book event at 2 s + 1 ns closes the bars up to 2 s: the trade
    at 2 s exactly (a bar's close) is fed with it, as the batch counts it."""
    book = _book([(S, 1, 100, 1, True), (S, -1, 101, 1, True), (2 * S + 1, 1, 100, 2, False)])
    trades = _trades([(2 * S, 1, 101, 3)])
    s = ResumableSampler(SPEC)
    pieced = pl.concat([s.feed(book, trades, 3 * S, piece_rows=1), s.finish(3 * S)])
    batch = sample_bars(book, trades, SPEC)
    assert batch["buy_vol"].sum() == 3 and pieced.equals(batch)


def test_feeding_in_pieces_still_refuses_unsorted_trades() -> None:
    book = _book([(S, 1, 100, 1, True), (S, -1, 101, 1, True), (2 * S, 1, 100, 2, False)])
    trades = _trades([(2 * S, 1, 101, 1), (S, -1, 100, 1)])
    with pytest.raises(ValueError):
        ResumableSampler(SPEC).feed(book, trades, 3 * S, piece_rows=1)


def test_bar_sampler_rejects_event_older_than_applied_time() -> None:
    s = BarSampler(SPEC)
    s.on_book(S, 1, 1, 1, True)
    s.advance(2 * S)
    try:
        s.on_trade(S, 1, 1, 1)
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError


def test_resumable_sampler_refuses_events_after_close_until_and_a_foreign_state() -> None:
    s = ResumableSampler(SPEC)
    with pytest.raises(ValueError, match="after close_until"):
        s.feed(_book(SNAP), _trades([]), S // 4)  # would close bars past its buffer
    state = s.state()
    state["st"] = state["st"][:24]  # a state saved before the execution slots (#17)
    with pytest.raises(ValueError, match="another version"):
        ResumableSampler.from_state(SPEC, state)


def test_sample_bars_snapshot_larger_than_the_book_array_grows_it_mid_feed() -> None:
    """A 600-level snapshot (the kernel's book starts at 256 levels) after a first bar:
    the feed stops, the book grows, the feed resumes; the bars are those of a feed with
    the snapshot alone (batch == streaming)."""
    first = [(S // 2, 1, 100, 1, True), (S // 2, -1, 101, 1, True), (S, 1, 100, 2, False)]
    snap = [(3 * S // 2, 1, 1000 - i, 10 + i, True) for i in range(600)]
    snap += [(3 * S // 2, -1, 1001 + i, 20 + i, True) for i in range(600)]
    snap += [(5 * S // 2, 1, 1000, 7, False)]
    bars = sample_bars(_book(first + snap), _trades([]), SPEC)
    assert bars.height == 3  # closes at 1 s, 2 s (the snapshot) and 3 s
    row = bars.row(1, named=True)
    assert [row[f"bid_px_{i}"] for i in range(10)] == [1000 - i for i in range(10)]
    assert [row[f"ask_sz_{i}"] for i in range(10)] == [20 + i for i in range(10)]
    assert bars.row(2, named=True)["bid_sz_0"] == 7 and bars["book_ok"].all()
    stream = BarSampler(SPEC)
    for ts, side, px, sz, f in first + snap:
        stream.on_book(ts, side, px, sz, f)
    got = stream.advance(3 * S)
    assert pl.DataFrame(got, schema=bars.schema).equals(bars)
