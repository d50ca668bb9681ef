"""Raw BitMEX websocket recordings: read the two on-disk formats, write the project's own.

Adapter ring: one I/O concern (files of received websocket messages).

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

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.clock import NS_PER_S
from live.jsonl import JsonLinesAppender


class RecordingError(ValueError):
    """A recording line that is neither a header, a capture line nor a JSON-lines record."""


def seconds_text_to_ns(text: str) -> int:
    """Exact int ns of a decimal seconds string (`"1626993367.875267"` -> ...875267000).

    Decimal, not float: a float loses the last microseconds of a 2021 epoch time.
    Raises ValueError on text that is not a decimal number.
    """
    return int(Decimal(text.strip()) * NS_PER_S)


def parse_recording_line(line: str) -> tuple[int, dict[str, Any]] | None:
    """Parse one line of either format. Pure.

    Returns (ts_recv_ns, message) or None for a blank line or a connection header line
    (`... <-> ...`, `... <- ...`: what the client sent, not what it received).
    Raises RecordingError on anything else that does not parse.
    """
    s = line.strip()
    if not s:
        return None
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            raise RecordingError(f"invalid JSON line: {exc}") from exc
        if not isinstance(obj, dict) or "ts_recv" not in obj or "msg" not in obj:
            raise RecordingError("JSON line without 'ts_recv' and 'msg'")
        ts = obj["ts_recv"]
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise RecordingError(f"ts_recv must be int ns, got {ts!r}")
        if not isinstance(obj["msg"], dict):
            raise RecordingError("msg must be a JSON object")
        return ts, obj["msg"]
    if s.startswith(("wss://", "ws://")):
        return None
    head, sep, body = s.partition(": ")
    if not sep:
        raise RecordingError("capture line without '<time>: <json>'")
    try:
        ts = seconds_text_to_ns(head)
    except ArithmeticError as exc:
        raise RecordingError(f"bad receive time {head!r}") from exc
    try:
        msg = json.loads(body)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"invalid JSON after the receive time: {exc}") from exc
    if not isinstance(msg, dict):
        raise RecordingError("message is not a JSON object")
    return ts, msg


def iter_recording(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
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


def load_recording(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
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

    def write(self, ts_recv_ns: int, msg: dict[str, Any]) -> None:
        self._out.append({"ts_recv": int(ts_recv_ns), "msg": msg})

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
