"""tardis.dev CSV (.csv / .csv.gz) -> canonical events (adapter).

Data types (detected from the header):
- ``incremental_book_L2``: exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount
  (amount = new absolute level size, 0 deletes; a new run of is_snapshot=true rows
  replaces the book; updates before the first snapshot are dropped and counted).
- ``book_snapshot_N`` (e.g. 25): exchange,symbol,timestamp,local_timestamp, then
  asks[i].price, asks[i].amount, bids[i].price, bids[i].amount: consecutive top-N states
  become deltas (`ingest.levels`).
- ``trades``: exchange,symbol,timestamp,local_timestamp,id,side,price,amount.
- ``quotes``: exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount
  (a depth-1 book).
Timestamps are microseconds: ``ts_event = timestamp*1000``, ``ts_recv = local_timestamp*1000``.
Every line is counted (`ingest.csvtable`): rows of other symbols and blank lines are
filtered, bad rows rejected with a reason. Trades keep tardis' ``id`` (the exchange's
trade id) for de-duplication (`FileRead.trade_ids`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from core import schema
from core.instrument import InstrumentSpec
from ingest.csvtable import (
    REASON,
    account,
    add_reason,
    count_input,
    count_lines,
    drop_blank,
    filter_symbol,
    int_col,
    int_expr,
    off_tick,
    read_header,
    read_lines,
    read_typed,
    read_typed_body,
    split_fields,
    ticks_expr,
)
from ingest.events import book_schema, empty_book, empty_trades, trade_schema
from ingest.levels import levels_to_deltas
from ingest.rawfile import BLOCK_BYTES, RawFileError, RawStream, iter_raw_blocks, read_raw
from ingest.report import FileRead

BASE = ["exchange", "symbol", "timestamp", "local_timestamp"]
INCREMENTAL = [*BASE, "is_snapshot", "side", "price", "amount"]
TRADES = [*BASE, "id", "side", "price", "amount"]
QUOTES = [*BASE, "ask_amount", "ask_price", "bid_price", "bid_amount"]
_LEVEL = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")


def _kind(header: list[str]) -> str:
    if header == INCREMENTAL:
        return "incremental_book_L2"
    if header == TRADES:
        return "trades"
    if header == QUOTES:
        return "quotes"
    if header[:4] == BASE and len(header) > 4 and all(_LEVEL.match(h) for h in header[4:]):
        levels = {int(_LEVEL.match(h).group(2)) for h in header[4:]}  # type: ignore[union-attr]
        k = max(levels) + 1
        want = {
            f"{s}[{i}].{f}" for s in ("asks", "bids") for i in range(k) for f in ("price", "amount")
        }
        if set(header[4:]) == want and len(header) == 4 + len(want):
            return "book_snapshot"
    raise RawFileError(
        f"wrong header: not a tardis incremental_book_L2/book_snapshot/trades/quotes file: {','.join(header)[:200]!r}"
    )


def _dtypes(header: list[str]) -> dict[str, pl.DataType]:
    """Typed-parse schema of the fast path (numbers as numbers, the rest as text)."""
    out: dict[str, pl.DataType] = {"timestamp": pl.Int64(), "local_timestamp": pl.Int64()}
    for h in header:
        if h in (
            "price",
            "amount",
            "ask_amount",
            "ask_price",
            "bid_price",
            "bid_amount",
        ) or _LEVEL.match(h):
            out[h] = pl.Float64()
    return out


def _flag(
    df: pl.DataFrame, col: str, mapping: dict[str, int | bool], dtype: pl.DataType
) -> pl.Expr:
    if df.schema[col] == pl.String:
        return pl.col(col).replace_strict(mapping, default=None, return_dtype=dtype)  # type: ignore[arg-type]
    return pl.col(col).cast(dtype, strict=False)


def _times(df: pl.DataFrame) -> pl.DataFrame:
    df = df.with_columns(
        (int_col(df, "timestamp") * 1000).alias(schema.TS_EVENT),
        (int_col(df, "local_timestamp") * 1000).alias(schema.TS_RECV),
    )
    return add_reason(
        df,
        pl.col(schema.TS_EVENT).is_null() | pl.col(schema.TS_RECV).is_null(),
        "malformed timestamp",
    )


def _price(df: pl.DataFrame, col: str, tick: float, name: str) -> pl.DataFrame:
    px = pl.col(col).cast(pl.Float64, strict=False)
    df = add_reason(df, px.is_null() | (px <= 0), f"malformed {col}")
    df = add_reason(df, off_tick(px, tick), f"off-tick {col} (tick {tick:g})")
    return df.with_columns(ticks_expr(px, tick).alias(name))


def _size(df: pl.DataFrame, col: str, name: str) -> pl.DataFrame:
    df = df.with_columns(int_expr(pl.col(col)).alias(name))
    return add_reason(
        df,
        pl.col(name).is_null() | (pl.col(name) < 0),
        f"malformed {col} (not a non-negative integer)",
    )


def trade_id_series(good: pl.DataFrame, col: str) -> pl.Series:
    """The exchange trade ids of the kept rows (String; null where empty)."""
    ids = good[col].cast(pl.String).str.strip_chars()
    return ids.set(ids == "", None).rename("trade_id")  # type: ignore[arg-type]


#: data types read block by block (`read_tardis`); the level kinds are read whole
STREAMED_KINDS = ("incremental_book_L2", "trades")

#: receives each block's kept rows: (kind "book" | "trades", canonical frame, trade
#: ids or None)
Sink = Callable[[str, pl.DataFrame, pl.Series | None], None]


@dataclass
class _Blocks:
    """State carried from block to block of one streamed file."""

    kept: int = 0  # rows kept so far
    symbol_rows: int = 0  # rows left after the symbol filter so far
    first_row: int = 2  # line number of the next block's first line
    seen_snapshot: bool = False  # a valid snapshot row was seen (book)
    book: list[pl.DataFrame] = field(default_factory=list)
    trades: list[pl.DataFrame] = field(default_factory=list)
    ids: list[pl.Series] = field(default_factory=list)


def read_tardis(
    path: str | Path,
    symbol: str,
    instrument: InstrumentSpec,
    sink: Sink | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> FileRead:
    """Read one tardis CSV(.gz) file for `symbol`. Never raises for bad content: the
    FileRead carries the file- or row-level reasons.

    incremental_book_L2 and trades files stream through in blocks of about
    `block_bytes` of text (`ingest.rawfile.iter_raw_blocks`): each block is parsed,
    counted and checked on its own (rows before the file's first snapshot are rejected
    across blocks), so a day of 20 M rows never sits in memory as text or strings. With
    a `sink`, each block's kept rows go to it (in file order) and the FileRead's frames
    stay empty; without, they are concatenated into the FileRead. The blocks give the
    same rows, counts and reasons as one pass over the whole file (tested). The other
    kinds (book_snapshot_N, quotes) are read whole."""
    fr = FileRead(path=str(path), sha256=None, book=empty_book(), trades=empty_trades())
    stream = RawStream(str(path))
    st = _Blocks()
    kind = ""
    try:
        blocks = iter_raw_blocks(path, stream, block_bytes)
        for head, body in blocks:
            header = read_header(head)
            kind = _kind(header)
            if kind not in STREAMED_KINDS:
                blocks.close()
                return _read_whole(path, symbol, instrument)
            _read_block(fr, st, head, body, header, kind, symbol, instrument.tick_size, sink)
    except RawFileError as exc:
        fr = FileRead(path=str(path), sha256=None, book=empty_book(), trades=empty_trades())
        fr.sha256 = stream.sha256 or exc.sha256
        fr.quarantine_file(str(exc))
        fr.quarantine_if_nothing_valid(symbol)
        return fr
    fr.sha256 = stream.sha256
    if st.symbol_rows == 0:
        fr.quarantine_file(f"no rows for symbol {symbol}")
        return fr
    if kind == "incremental_book_L2":
        fr.book_kind = f"tardis:{kind}"
        if sink is None and st.book:
            fr.book = pl.concat(st.book) if len(st.book) > 1 else st.book[0]
    elif sink is None and st.trades:
        fr.trades = pl.concat(st.trades) if len(st.trades) > 1 else st.trades[0]
        fr.trade_ids = pl.concat(st.ids) if len(st.ids) > 1 else st.ids[0]
    elif kind == "trades" and sink is None:
        fr.trade_ids = pl.Series("trade_id", [], dtype=pl.String)
    fr.quarantine_if_nothing_valid(symbol)
    return fr


def _read_block(
    fr: FileRead,
    st: _Blocks,
    head: bytes,
    body: bytes,
    header: list[str],
    kind: str,
    symbol: str,
    tick: float,
    sink: Sink | None,
) -> None:
    """Parse, count and check one block of whole lines (see `read_tardis`)."""
    n = count_lines(body)
    fr.rows_in += n
    first = st.first_row
    st.first_row += n
    df = read_typed_body(body, header, _dtypes(header), first_row=first)
    if df is None:
        lines = read_lines(head + body, first_row=first)[1]
        df = split_fields(drop_blank(fr, lines), header)
    df = filter_symbol(fr, df, symbol)
    if df.height == 0:
        fr.check_balance(st.kept)
        return
    st.symbol_rows += df.height
    df = _times(df)
    if kind == "incremental_book_L2":
        df = df.with_columns(
            pl.col("side")
            .replace_strict({"bid": 1, "ask": -1}, default=None, return_dtype=pl.Int8)
            .alias(schema.SIDE)
        )
        df = add_reason(df, pl.col(schema.SIDE).is_null(), "bad side (expected bid/ask)")
        df = df.with_columns(
            _flag(df, "is_snapshot", {"true": True, "false": False}, pl.Boolean()).alias(
                schema.IS_SNAPSHOT
            )
        )
        df = add_reason(
            df, pl.col(schema.IS_SNAPSHOT).is_null(), "bad is_snapshot (expected true/false)"
        )
        df = _price(df, "price", tick, schema.PRICE_TICKS)
        df = _size(df, "amount", schema.SIZE)
        if not st.seen_snapshot:
            first_snap = (
                df.with_row_index("_i")
                .filter(pl.col(REASON).is_null() & pl.col(schema.IS_SNAPSHOT))
                .select(pl.col("_i").min())
                .item()
            )
            st.seen_snapshot = first_snap is not None
            idx = pl.int_range(pl.len())
            df = add_reason(
                df,
                idx < (first_snap if first_snap is not None else df.height),
                "update before the first snapshot",
            )
        good = account(fr, df)
        st.kept += good.height
        fr.check_balance(st.kept)
        book = good.select(schema.BOOK_COLUMNS).cast(book_schema())  # type: ignore[arg-type]
        if sink is not None:
            sink("book", book, None)
        else:
            st.book.append(book)
    else:
        df = df.with_columns(
            pl.col("side")
            .replace_strict({"buy": 1, "sell": -1}, default=None, return_dtype=pl.Int8)
            .alias(schema.SIDE)
        )
        df = add_reason(
            df, pl.col(schema.SIDE).is_null(), "bad or unknown trade side (expected buy/sell)"
        )
        df = _price(df, "price", tick, schema.PRICE_TICKS)
        df = _size(df, "amount", schema.SIZE)
        df = add_reason(df, pl.col(schema.SIZE) == 0, "zero trade size")
        good = account(fr, df)
        st.kept += good.height
        fr.check_balance(st.kept)
        trades = good.select(schema.TRADE_COLUMNS).cast(trade_schema())  # type: ignore[arg-type]
        ids = trade_id_series(good, "id")
        if sink is not None:
            sink("trades", trades, ids)
        else:
            st.trades.append(trades)
            st.ids.append(ids)


def _read_whole(path: str | Path, symbol: str, instrument: InstrumentSpec) -> FileRead:
    """A book_snapshot_N or quotes file, read whole (consecutive states become deltas)."""
    fr = FileRead(path=str(path), sha256=None, book=empty_book(), trades=empty_trades())
    try:
        data, fr.sha256 = read_raw(path)
        header = read_header(data)
        kind = _kind(header)
        count_input(fr, data)
        df = read_typed(data, header, _dtypes(header))
        if df is None:
            df = split_fields(drop_blank(fr, read_lines(data)[1]), header)
        df = filter_symbol(fr, df, symbol)
        if df.height == 0:
            fr.quarantine_file(f"no rows for symbol {symbol}")
            return fr
        df = _times(df)
        tick = instrument.tick_size
        if kind == "quotes":
            k = 1
            cols = {
                "bids": [("bid_price", "bid_amount")],
                "asks": [("ask_price", "ask_amount")],
            }
        else:
            k = len(header[4:]) // 4
            cols = {
                s: [(f"{s}[{i}].price", f"{s}[{i}].amount") for i in range(k)]
                for s in ("bids", "asks")
            }
        fr.book = _levels(fr, df, cols, k, tick)
        fr.book_kind = f"tardis:{kind}"
    except RawFileError as exc:
        fr.sha256 = fr.sha256 or exc.sha256
        fr.quarantine_file(str(exc))
    fr.quarantine_if_nothing_valid(symbol)
    return fr


def _levels(
    fr: FileRead, df: pl.DataFrame, cols: dict[str, list[tuple[str, str]]], k: int, tick: float
) -> pl.DataFrame:
    """Top-k states -> deltas; an empty level (both fields empty) is absent."""
    exprs = []
    for s, pairs in cols.items():
        for i, (pc, qc) in enumerate(pairs):
            px = pl.col(pc).cast(pl.Float64, strict=False)
            present = (
                pl.col(pc).str.len_chars() > 0
                if df.schema[pc] == pl.String
                else pl.col(pc).is_not_null()
            )
            exprs += [
                pl.when(present).then(ticks_expr(px, tick)).otherwise(0).alias(f"_{s}_p{i}"),
                pl.when(present).then(int_expr(pl.col(qc))).otherwise(0).alias(f"_{s}_q{i}"),
                (present & (px.is_null() | (px <= 0))).alias(f"_{s}_bad{i}"),
                (present & off_tick(px, tick).fill_null(False)).alias(f"_{s}_off{i}"),
            ]
    df = df.with_columns(exprs)
    bad_any = pl.any_horizontal([pl.col(f"_{s}_bad{i}") for s in cols for i in range(k)])
    off_any = pl.any_horizontal([pl.col(f"_{s}_off{i}") for s in cols for i in range(k)])
    df = add_reason(df, bad_any, "malformed level price")
    df = add_reason(df, off_any, f"off-tick level price (tick {tick:g})")
    q_null = pl.any_horizontal(
        [
            pl.col(f"_{s}_q{i}").is_null() | (pl.col(f"_{s}_q{i}") < 0)
            for s in cols
            for i in range(k)
        ]
    )
    df = add_reason(df, q_null, "malformed level amount")
    good = account(fr, df)
    fr.check_balance(good.height)
    if good.height == 0:
        return empty_book()
    mat = {
        f"{s}{f}": good.select([f"_{s}_{f}{i}" for i in range(k)]).to_numpy().astype(np.int64)
        for s in cols
        for f in ("p", "q")
    }
    rows = levels_to_deltas(
        good[schema.TS_EVENT].to_numpy(),
        good[schema.TS_RECV].to_numpy(),
        mat["bidsp"],
        mat["bidsq"],
        mat["asksp"],
        mat["asksq"],
    )
    out = pl.DataFrame({c: rows[:, i] for i, c in enumerate(schema.BOOK_COLUMNS)})
    return out.cast(book_schema())  # type: ignore[arg-type]
