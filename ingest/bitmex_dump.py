"""BitMEX public daily dumps (``trade/YYYYMMDD.csv.gz``, ``quote/YYYYMMDD.csv.gz``) ->
canonical events (adapter).

- trade: ``timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional[,trdType]``
- quote: ``timestamp,symbol,bidSize,bidPrice,askPrice,askSize`` -> a depth-1 book.
Timestamps look like ``2019-01-01D00:00:03.367608000`` (UTC, ns). A dump has no
receive time, so ``ts_recv = ts_event``. Every symbol is mixed in one file: rows of
other symbols are filtered (index symbols such as ``.BXBT`` carry size 0), counted
while the file streams (`ingest.rawfile.scan_symbol_lines`) with the blank and the
malformed lines, before any symbol filter. Trades keep ``trdMatchID`` for
de-duplication.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core import schema
from core.instrument import InstrumentSpec
from ingest.csvtable import (
    BLANK,
    OTHER_SYMBOL,
    account,
    add_reason,
    body_of,
    check_header,
    count_lines,
    drop_blank,
    filter_symbol,
    read_header,
    read_lines,
    read_typed,
    split_fields,
)
from ingest.events import empty_book, empty_trades, trade_schema
from ingest.rawfile import RawFileError, scan_symbol_lines
from ingest.report import FileRead
from ingest.tardis import _levels, _price, _size, trade_id_series

TRADE = [
    "timestamp",
    "symbol",
    "side",
    "size",
    "price",
    "tickDirection",
    "trdMatchID",
    "grossValue",
    "homeNotional",
    "foreignNotional",
]
TRADE_OPTIONAL = ["trdType"]
QUOTE = ["timestamp", "symbol", "bidSize", "bidPrice", "askPrice", "askSize"]
_DTYPES: dict[str, pl.DataType] = {
    c: pl.Float64() for c in ("size", "price", "bidSize", "bidPrice", "askPrice", "askSize")
}


def timestamp_ns(col: pl.Expr) -> pl.Expr:
    """Int64 ns of ``YYYY-MM-DDDhh:mm:ss.fffffffff`` text; null when malformed."""
    return (
        col.str.replace("D", "T", literal=True)
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="ns", time_zone="UTC", strict=False)
        .dt.epoch("ns")
    )


def read_bitmex_dump(path: str | Path, symbol: str, instrument: InstrumentSpec) -> FileRead:
    """Read one trade or quote dump for `symbol`; bad content is reported, never raised.

    Only the lines of `symbol` are kept while the file streams through (dumps hold every
    symbol); rejected-row line numbers count those lines only."""
    fr = FileRead(path=str(path), sha256=None, book=empty_book(), trades=empty_trades())
    try:
        scan = scan_symbol_lines(path, symbol)
        data, fr.sha256 = scan.data, scan.sha256
        header = read_header(data)
        if header[: len(TRADE)] == TRADE:
            check_header(header, TRADE, TRADE_OPTIONAL)
            kind = "trade"
        else:
            check_header(header, QUOTE)
            kind = "quote"
        # the lines the scan set aside (other symbols, blank, malformed), then the kept ones
        fr.rows_in = scan.other + scan.blank + sum(scan.malformed.values())
        fr.filter(OTHER_SYMBOL, scan.other)
        fr.filter(BLANK, scan.blank)
        for reason, n in scan.malformed.items():
            fr.rows_rejected += n
            fr.row_reasons[reason] += n
        fr.rows_in += count_lines(body_of(data))
        df = read_typed(data, header, _DTYPES)
        if df is None:
            df = split_fields(drop_blank(fr, read_lines(data)[1]), header)
        df = filter_symbol(fr, df, symbol)
        if df.height == 0:
            fr.quarantine_file(f"no rows for symbol {symbol}")
            return fr
        df = df.with_columns(timestamp_ns(pl.col("timestamp")).alias(schema.TS_EVENT))
        df = df.with_columns(pl.col(schema.TS_EVENT).alias(schema.TS_RECV))
        df = add_reason(df, pl.col(schema.TS_EVENT).is_null(), "malformed timestamp")
        if kind == "trade":
            df = df.with_columns(
                pl.col("side")
                .replace_strict({"Buy": 1, "Sell": -1}, default=None, return_dtype=pl.Int8)
                .alias(schema.SIDE)
            )
            df = add_reason(df, pl.col(schema.SIDE).is_null(), "bad trade side (expected Buy/Sell)")
            df = _price(df, "price", instrument.tick_size, schema.PRICE_TICKS)
            df = _size(df, "size", schema.SIZE)
            df = add_reason(df, pl.col(schema.SIZE) == 0, "zero trade size")
            good = account(fr, df).sort(schema.TS_RECV, maintain_order=True)
            fr.trades = good.select(schema.TRADE_COLUMNS).cast(trade_schema())  # type: ignore[arg-type]
            fr.trade_ids = trade_id_series(good, "trdMatchID")
            fr.check_balance(good.height)
        else:
            cols = {"bids": [("bidPrice", "bidSize")], "asks": [("askPrice", "askSize")]}
            fr.book_kind = "bitmex-dump:quote"
            fr.book = _levels(
                fr, df.sort(schema.TS_RECV, maintain_order=True), cols, 1, instrument.tick_size
            )
    except RawFileError as exc:
        fr.sha256 = fr.sha256 or exc.sha256
        fr.quarantine_file(str(exc))
    fr.quarantine_if_nothing_valid(symbol)
    return fr
