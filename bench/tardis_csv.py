"""Canonical events -> tardis.dev CSV files (incremental_book_L2 + trades), for peers.

The inverse of `ingest.tardis` for the two files a fill cross-check needs: both Chappie
(`chappie ingest tardis`) and hftbacktest (`hftbacktest.data.utils.tardis.convert`) read
what this writes, so they see the same market. Timestamps are microseconds (tardis):
``timestamp = ts_event // 1000``, ``local_timestamp = ts_recv // 1000``; prices are
``ticks * tick_size``; sizes are contracts. File names follow tardis
(``<exchange>_<data type>_<day>_<symbol>.csv.gz``): hftbacktest picks the schema by name.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core import schema
from core.instrument import InstrumentSpec


def _price(tick: float) -> pl.Expr:
    return (pl.col(schema.PRICE_TICKS).cast(pl.Float64) * tick).alias("price")


def _common(symbol: str, exchange: str) -> list[pl.Expr]:
    return [
        pl.lit(exchange).alias("exchange"),
        pl.lit(symbol).alias("symbol"),
        (pl.col(schema.TS_EVENT) // 1000).alias("timestamp"),
        (pl.col(schema.TS_RECV) // 1000).alias("local_timestamp"),
    ]


def write_tardis_day(
    book: pl.DataFrame,
    trades: pl.DataFrame,
    day: str,
    folder: Path,
    instrument: InstrumentSpec,
    exchange: str = "bitmex",
) -> tuple[Path, Path]:
    """Write one day's canonical (book, trades) as tardis CSV.gz; return (book, trades)
    paths. Rows keep their (receive) order."""
    folder.mkdir(parents=True, exist_ok=True)
    sym, tick = instrument.symbol, instrument.tick_size
    b = book.select(
        *_common(sym, exchange),
        pl.when(pl.col(schema.IS_SNAPSHOT))
        .then(pl.lit("true"))
        .otherwise(pl.lit("false"))
        .alias("is_snapshot"),
        pl.when(pl.col(schema.SIDE) > 0).then(pl.lit("bid")).otherwise(pl.lit("ask")).alias("side"),
        _price(tick),
        pl.col(schema.SIZE).alias("amount"),
    )
    t = trades.with_row_index("id").select(
        *_common(sym, exchange),
        (pl.lit(f"{day}-") + pl.col("id").cast(pl.String)).alias("id"),
        pl.when(pl.col(schema.SIDE) > 0)
        .then(pl.lit("buy"))
        .otherwise(pl.lit("sell"))
        .alias("side"),
        _price(tick),
        pl.col(schema.SIZE).alias("amount"),
    )
    paths = (
        folder / f"{exchange}_incremental_book_L2_{day}_{sym}.csv.gz",
        folder / f"{exchange}_trades_{day}_{sym}.csv.gz",
    )
    for df, path in zip((b, t), paths, strict=True):
        tmp = path.with_suffix(".tmp")
        df.write_csv(tmp, compression="gzip", check_extension=False)
        tmp.replace(path)
    return paths
