"""BitMEX websocket recordings -> canonical events (adapter), through `BitmexWsDecoder`.

Reads the capture format (``<unix seconds>: <json>`` lines with ``wss://`` headers) and
the project's JSON lines (``{"ts_recv": <int ns>, "msg": {...}}``), plain or gzip.
The book table is the richest one with a partial for the symbol in the file
(orderBookL2 > orderBookL2_25 > orderBook10 > quote) unless given.

Counting (`ingest.report`): a line holding a message with ``data`` counts as its data
elements (classified by the decoder); every other line counts once: a malformed line is
rejected ("malformed line: ..."), a blank or connection header line, or a message
without rows, is filtered. A line that cannot be decoded never stops the file: it is
quarantined with its reason and the rest is ingested.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.instrument import InstrumentSpec
from ingest.bitmex_ws import (
    BOOK_TABLES,
    BitmexWsDecoder,
    RecordingFormatError,
    message_units,
    parse_recording_line,
)
from ingest.events import book_schema, trade_schema
from ingest.rawfile import RawFileError, read_raw
from ingest.report import CountError, FileRead, json_safe


def detect_book_table(lines: list[str], symbol: str) -> str | None:
    """The richest book table with a partial for `symbol` in these lines."""
    found: set[str] = set()
    for line in lines:
        if '"partial"' not in line:
            continue
        try:
            parsed = parse_recording_line(line)
        except RecordingFormatError:
            continue
        if parsed is None:
            continue
        msg = parsed[1]
        if msg.get("action") != "partial" or msg.get("table") not in BOOK_TABLES:
            continue
        rows, flt = msg.get("data"), msg.get("filter")
        if (  # any shape of `data` and `filter` may come: only a row or filter naming us counts
            isinstance(rows, list)
            and any(isinstance(r, dict) and r.get("symbol") == symbol for r in rows)
        ) or (isinstance(flt, dict) and flt.get("symbol") == symbol):
            found.add(str(msg["table"]))
    return next((t for t in BOOK_TABLES if t in found), None)


def read_ws_recording(
    path: str | Path, symbol: str, instrument: InstrumentSpec, book_table: str | None = None
) -> FileRead:
    """Decode one recording for `symbol`; bad content is reported, never raised."""
    fr = FileRead(
        path=str(path),
        sha256=None,
        book=pl.DataFrame(schema=book_schema()),
        trades=pl.DataFrame(schema=trade_schema()),
    )
    try:
        data, fr.sha256 = read_raw(path)
    except RawFileError as exc:
        fr.sha256 = exc.sha256
        fr.quarantine_file(str(exc))
        return fr
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        fr.quarantine_file(f"not UTF-8 text: {exc}")
        return fr
    table = book_table or detect_book_table(lines, symbol) or "orderBookL2"
    dec = BitmexWsDecoder(symbol, instrument, book_table=table, strict=False)
    book: list[tuple[int, int, int, int, int, bool]] = []
    trades: list[tuple[int, int, int, int, int]] = []
    trade_ids: list[str | None] = []
    messages = 0
    units = 0  # the decoder's share of rows_in, counted here from the messages themselves
    for no, line in enumerate(lines, start=1):
        try:
            parsed = parse_recording_line(line)
        except RecordingFormatError as exc:
            fr.rows_in += 1
            fr.reject(
                f"malformed line: {str(exc).split(':')[0]}", {"line_no": no, "line": line[:300]}
            )
            continue
        if parsed is None:
            fr.rows_in += 1
            fr.filter("blank line" if not line.strip() else "connection header line")
            continue
        messages += 1
        ts_recv, msg = parsed
        units += message_units(msg)
        d = dec.decode(msg, ts_recv)
        book += [(d.ts_event, ts_recv, s, p, q, d.is_snapshot) for s, p, q in d.book]
        trades += [(te, ts_recv, s, p, q) for s, p, q, te in d.trades]
        trade_ids += d.trade_ids
    if units != dec.rows_in + dec.rows_filtered:
        raise CountError(
            f"{path}: {units} message rows != decoder's {dec.rows_in} in + "
            f"{dec.rows_filtered} filtered"
        )
    fr.rows_in += units
    for reason, n in dec.row_reasons.items():
        fr.rows_rejected += n
        fr.row_reasons[reason] += n
    for reason, n in dec.filtered_reasons.items():
        fr.filter(reason, n)
    fr.rejected_rows += [
        {"reason": r["reason"], "row": json_safe(r["row"])} for r in dec.rejected[:200]
    ]
    if messages == 0:
        fr.quarantine_file("no parseable websocket messages")
    elif dec.rows_in == 0:
        fr.quarantine_file(f"no rows for symbol {symbol}")
    elif not fr.quarantine_if_nothing_valid(symbol):
        fr.book = pl.DataFrame(book, schema=book_schema(), orient="row")
        fr.book_kind = f"ws:{table}"
        fr.trades = pl.DataFrame(trades, schema=trade_schema(), orient="row")
        fr.trade_ids = pl.Series("trade_id", trade_ids, dtype=pl.String)
    return fr
