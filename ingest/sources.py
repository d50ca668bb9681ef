"""Dispatch a raw file to the reader of its source (adapter)."""

from __future__ import annotations

from pathlib import Path

from core.instrument import InstrumentSpec
from ingest.bitmex_dump import read_bitmex_dump
from ingest.report import FileRead
from ingest.tardis import read_tardis
from ingest.ws_recording import read_ws_recording

SOURCES = ("tardis", "bitmex-dump", "ws-recording")


def read_source_file(
    source: str, path: str | Path, symbol: str, instrument: InstrumentSpec
) -> FileRead:
    """Read one raw file of `source` for `symbol`. Raises ValueError for an unknown source
    (the run cannot proceed); bad content is reported in the FileRead."""
    if source == "tardis":
        return read_tardis(path, symbol, instrument)
    if source == "bitmex-dump":
        return read_bitmex_dump(path, symbol, instrument)
    if source == "ws-recording":
        return read_ws_recording(path, symbol, instrument)
    raise ValueError(f"unknown source {source!r} (one of {', '.join(SOURCES)}, synthetic)")
