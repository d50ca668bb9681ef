"""Append-only JSON lines files (decisions, recordings, the journal). Adapter ring.

Each `append` writes one compact JSON object and a newline and flushes it to the OS; with
`fsync_each=True` it is also on disk before `append` returns (the journal: an intent that
was written survives a crash). `close()` always fsyncs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any


class JsonLinesAppender:
    """Append JSON objects to `path`, one a line (the parent folder is created)."""

    def __init__(self, path: str | Path, fsync_each: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_each = fsync_each
        self._fh: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.lines = 0

    def append(self, obj: Any) -> None:
        """Write one object as a line; raises ValueError when closed."""
        if self._fh is None:
            raise ValueError(f"{self.path} is closed")
        self._fh.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
        self._fh.flush()
        if self.fsync_each:
            os.fsync(self._fh.fileno())
        self.lines += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def __enter__(self) -> JsonLinesAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
