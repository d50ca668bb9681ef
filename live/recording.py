"""Raw BitMEX websocket recordings: read the two on-disk formats, write the project's own.

Adapter ring: one I/O concern (files of received websocket messages). Lines are parsed
by ingest's `parse_recording_line`, so ingest and the live loop read recordings alike.

Formats read by `iter_recording`:
1. The cryptofeed-style capture (`../shared/data/bitmex_ws_XBTUSD_2021-07-22.txt`):
   header lines `wss://... <-> <unix s>` and `wss://... <- <unix s>: <sent json>` (skipped:
   they are what the client sent), then one received message a line as
   `<unix seconds with fraction>: <json>`.
2. The project's own JSON lines, written by `chappie live --record PATH`:
   `{"ts_recv": <int ns UTC>, "msg": <raw message object>}` one a line.

A malformed line raises `RecordingError` naming the file and line number: a recording is
evidence, nothing in it is silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from core.jsontypes import JsonObject
from ingest.bitmex_ws import RecordingFormatError, parse_recording_line
from live.jsonl import JsonLinesAppender

RecordingError = RecordingFormatError  # one parser: ingest.bitmex_ws.parse_recording_line


def iter_recording(path: str | Path) -> Iterator[tuple[int, JsonObject]]:
    """Yield (ts_recv_ns, message) for every received message of a recording, in file order.

    Raises RecordingError (with file and line number) on a malformed line.
    """
    p = Path(path)
    with p.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            try:
                parsed = parse_recording_line(line)
            except RecordingError as exc:
                raise RecordingError(f"{p}:{n}: {exc}") from exc
            if parsed is not None:
                yield parsed


def load_recording(path: str | Path) -> list[tuple[int, JsonObject]]:
    """All messages of a recording (see `iter_recording`)."""
    return list(iter_recording(path))


class RecordingWriter:
    """Append received messages as JSON lines `{"ts_recv": ns, "msg": {...}}`.

    Every line is flushed to the OS when written (a crash loses at most the line being
    written); `close()` fsyncs. The file is opened in append mode, so a restarted session
    continues the same recording.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._out = JsonLinesAppender(self.path)

    @property
    def lines(self) -> int:
        return self._out.lines

    def write(self, ts_recv_ns: int, msg: JsonObject) -> None:
        self._out.append({"ts_recv": int(ts_recv_ns), "msg": msg})

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
