"""The live loop's decoder: the ONE BitMEX websocket decoder of `ingest.bitmex_ws`
(DEVELOPERS.md, recorded exception 2), in strict mode.

Strict: an update or delete of an unknown level id raises `UnknownLevelError` (a desync:
the loop resubscribes for a fresh partial) instead of being counted and dropped as ingest
does. Table messages before a table's partial are dropped by the decoder; the feed already
requires a fresh partial per table after every (re)connect and resubscribe. A recording and
the live socket therefore decode through the same code.
"""

from __future__ import annotations

from core.instrument import InstrumentSpec
from ingest.bitmex_ws import BitmexWsDecoder, Decoded, UnknownLevelError, parse_timestamp_ns

__all__ = ["BitmexWsDecoder", "Decoded", "UnknownLevelError", "make_decoder", "parse_timestamp_ns"]


def make_decoder(
    symbol: str, instrument: InstrumentSpec, book_table: str = "orderBookL2"
) -> BitmexWsDecoder:
    """A strict decoder of `symbol`'s `book_table` and trade messages."""
    return BitmexWsDecoder(symbol, instrument, book_table=book_table, strict=True)
