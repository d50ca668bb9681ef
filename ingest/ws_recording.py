"""BitMEX websocket recordings -> canonical events (adapter), through `BitmexWsDecoder`.

Reads the capture format (``<unix seconds>: <json>`` lines with ``wss://`` headers) and
the project's JSON lines (``{"ts_recv": <int ns>, "msg": {...}}``), plain or gzip.
The book table is the richest one with a partial for the symbol in the file
(orderBookL2 > orderBookL2_25 > orderBook10 > quote) unless given.
A malformed line counts as one rejected row ("malformed line").
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from core.instrument import InstrumentSpec
from ingest.bitmex_ws import (
    BOOK_TABLES,
    BitmexWsDecoder,
    RecordingFormatError,
    parse_recording_line,
)
from ingest.events import book_schema, trade_schema
from ingest.rawfile import RawFileError, read_raw
from ingest.report import FileRead


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
        rows = msg.get("data") or []
        if (
            any(isinstance(r, dict) and r.get("symbol") == symbol for r in rows)
            or (msg.get("filter") or {}).get("symbol") == symbol
        ):
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
    malformed = 0
    messages = 0
    for no, line in enumerate(lines, start=1):
        try:
            parsed = parse_recording_line(line)
        except RecordingFormatError as exc:
            malformed += 1
            fr.reject(
                f"malformed line: {str(exc).split(':')[0]}", {"line_no": no, "line": line[:300]}
            )
            continue
        if parsed is None:
            continue
        messages += 1
        ts_recv, msg = parsed
        d = dec.decode(msg, ts_recv)
        book += [(d.ts_event, ts_recv, s, p, q, d.is_snapshot) for s, p, q in d.book]
        trades += [(te, ts_recv, s, p, q) for s, p, q, te in d.trades]
    fr.rows_in = dec.rows_in + malformed
    fr.rows_rejected = malformed
    for reason, n in dec.row_reasons.items():
        fr.rows_rejected += n
        fr.row_reasons[reason] += n
    fr.rejected_rows += [
        {"reason": r["reason"], "row": json.loads(json.dumps(r["row"], default=str))}
        for r in dec.rejected[:200]
    ]
    if messages == 0:
        fr.quarantine_file("no parseable websocket messages")
    elif dec.rows_in == 0:
        fr.quarantine_file(f"no rows for symbol {symbol}")
    elif not fr.quarantine_if_nothing_valid(symbol):
        fr.book = pl.DataFrame(book, schema=book_schema(), orient="row")
        fr.book_kind = f"ws:{table}"
        fr.trades = pl.DataFrame(trades, schema=trade_schema(), orient="row")
    return fr
